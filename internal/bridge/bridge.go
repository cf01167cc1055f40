// Package bridge reads and changes the admin's host bridge: it checks the
// bridge is usable, and manages the node's addresses on it. It never
// creates the bridge: a bridge made up by a plugin has no uplink, and VMs
// on it would be silently cut off from the L2.
package bridge

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Reasons a bridge cannot be used; the error names the bridge.
var (
	ErrNotFound  = errors.New("bridge does not exist")
	ErrNotBridge = errors.New("link is not a bridge")
	ErrDown      = errors.New("bridge is down")
)

// Bridge is the host bridge as the kernel sees it now.
type Bridge struct {
	Name  string
	Index int
	MTU   int
	MAC   net.HardwareAddr
	Up    bool
}

// Lookup finds the bridge and checks that it is a bridge. Callers that
// need it up check Up (DEL does not: it cleans a down bridge too).
func Lookup(name string) (*Bridge, error) {
	l, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil, fmt.Errorf("%w: %s (create it, with the node's uplink, before using this network)", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("find bridge %s: %w", name, err)
	}
	if _, ok := l.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("%w: %s is a %s", ErrNotBridge, name, l.Type())
	}
	a := l.Attrs()
	up := a.Flags&net.FlagUp != 0
	return &Bridge{Name: name, Index: a.Index, MTU: a.MTU, MAC: a.HardwareAddr, Up: up}, nil
}

// CheckUp returns ErrDown, naming the bridge, when it is down.
func (b *Bridge) CheckUp() error {
	if !b.Up {
		return fmt.Errorf("%w: %s (set it up)", ErrDown, b.Name)
	}
	return nil
}

// Device names the bridge for code that holds it through an interface
// (package hostaddr).
func (b *Bridge) Device() (name string, index int) { return b.Name, b.Index }

func (b *Bridge) link() netlink.Link {
	return &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: b.Name, Index: b.Index}}
}

// AddAddr puts p on the bridge; the kernel adds the connected route that
// makes the subnet on-link. An address already there is EEXIST.
//
// With dad false an IPv6 address skips duplicate address detection
// (IFA_F_NODAD): it is usable at once, never tentative.
func (b *Bridge) AddAddr(p netip.Prefix, dad bool) error {
	a := toAddr(p)
	if !dad && p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := netlink.AddrAdd(b.link(), a); err != nil {
		return fmt.Errorf("add %s to %s: %w", p, b.Name, err)
	}
	return nil
}

// DelAddr removes p; nil if it is already gone (EADDRNOTAVAIL), which is
// what a racing or repeated DEL sees.
func (b *Bridge) DelAddr(p netip.Prefix) error {
	err := netlink.AddrDel(b.link(), toAddr(p))
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("remove %s from %s: %w", p, b.Name, err)
	}
	return nil
}

func toAddr(p netip.Prefix) *netlink.Addr {
	bits := p.Addr().BitLen()
	return &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}}
}

// Isolate sets the port's "isolated" flag: isolated ports reach the
// uplink and the host but not each other.
func (b *Bridge) Isolate(port string) error {
	l, err := netlink.LinkByName(port)
	if err != nil {
		return fmt.Errorf("find port %s: %w", port, err)
	}
	if err := netlink.LinkSetIsolated(l, true); err != nil {
		return fmt.Errorf("isolate port %s: %w", port, err)
	}
	return nil
}

// VerifyPort checks that port is up and enslaved to this bridge.
func (b *Bridge) VerifyPort(port string) error {
	l, err := netlink.LinkByName(port)
	if err != nil {
		return fmt.Errorf("host veth %s: %w", port, err)
	}
	a := l.Attrs()
	if a.MasterIndex != b.Index {
		return fmt.Errorf("host veth %s is not a port of bridge %s", port, b.Name)
	}
	if a.Flags&net.FlagUp == 0 {
		return fmt.Errorf("host veth %s is down", port)
	}
	return nil
}
