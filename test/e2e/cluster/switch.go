package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// Ethertypes the migration tests tell apart: QEMU's announce after a
// migration is RARP; the guest's own announce is gratuitous ARP.
const (
	EtherTypeARP  = 0x0806
	EtherTypeRARP = 0x8035
)

// SwitchPort is the switch's port for a node ("port-node1") or a peer.
func SwitchPort(name string) string { return "port-" + name }

// Frame is one frame a switch port received, as far as the tests look.
type Frame struct {
	At        time.Time
	Src, Dst  net.HardwareAddr
	EtherType uint16
	// For an IPv4 ARP frame: the sender and target protocol addresses.
	ARPSender, ARPTarget netip.Addr
}

// GratuitousARP says whether f is an ARP announcing ip: sender and
// target address both ip (a request or a reply, as Linux's
// netdev_notify_peers and arping -U/-A send).
func (f Frame) GratuitousARP(ip netip.Addr) bool {
	return f.EtherType == EtherTypeARP && f.ARPSender == ip && f.ARPTarget == ip
}

// Capture records the frames a switch port receives from its node (what
// the node sends onto the L2), with the time each arrived.
type Capture struct {
	Port string

	fd     int
	mu     sync.Mutex
	frames []Frame
	quit   chan struct{}
	done   chan struct{}
	once   sync.Once
}

// CapturePort starts capturing on the switch's port for name (a node or
// a peer). Stop it with Stop; Close stops it too.
func (c *Cluster) CapturePort(name string) (*Capture, error) {
	cp := &Capture{Port: SwitchPort(name), quit: make(chan struct{}), done: make(chan struct{})}
	proto := int(htons(unix.ETH_P_ALL))
	err := c.Switch.Do(func() error {
		l, err := netlink.LinkByName(cp.Port)
		if err != nil {
			return err
		}
		if cp.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		if err := unix.Bind(cp.fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: l.Attrs().Index}); err != nil {
			unix.Close(cp.fd)
			return err
		}
		_ = unix.SetsockoptInt(cp.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
		// A bounded wait, so the reader sees quit.
		return unix.SetsockoptTimeval(cp.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50_000})
	})
	if err != nil {
		return nil, fmt.Errorf("capture on %s: %w", cp.Port, err)
	}
	go cp.read()
	c.onClose(func() error { cp.Stop(); return nil })
	return cp, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (cp *Capture) read() {
	defer close(cp.done)
	defer unix.Close(cp.fd) // here, so no Recvfrom ever runs on a reused fd number
	buf := make([]byte, 65536)
	for {
		select {
		case <-cp.quit:
			return
		default:
		}
		n, from, err := unix.Recvfrom(cp.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		// Outgoing: what the switch forwards to the node, not what it sent.
		if ll, ok := from.(*unix.SockaddrLinklayer); (ok && ll.Pkttype == unix.PACKET_OUTGOING) || n < 14 {
			continue
		}
		f := Frame{At: time.Now(), Dst: bytes.Clone(buf[0:6]), Src: bytes.Clone(buf[6:12]), EtherType: binary.BigEndian.Uint16(buf[12:14])}
		if f.EtherType == EtherTypeARP && n >= 14+28 {
			arp := buf[14 : 14+28]
			f.ARPSender, _ = netip.AddrFromSlice(bytes.Clone(arp[14:18]))
			f.ARPTarget, _ = netip.AddrFromSlice(bytes.Clone(arp[24:28]))
		}
		cp.mu.Lock()
		cp.frames = append(cp.frames, f)
		cp.mu.Unlock()
	}
}

// Stop ends the capture; the frames stay readable.
func (cp *Capture) Stop() {
	cp.once.Do(func() { close(cp.quit) })
	<-cp.done
}

// From returns the frames received so far whose source is mac.
func (cp *Capture) From(mac net.HardwareAddr) []Frame {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var out []Frame
	for _, f := range cp.frames {
		if bytes.Equal(f.Src, mac) {
			out = append(out, f)
		}
	}
	return out
}

// SwitchFDB says which switch port the switch forwards mac to ("port-node1"),
// from its learned forwarding entries, or "" if it has none for mac.
func (c *Cluster) SwitchFDB(mac net.HardwareAddr) (string, error) {
	var port string
	err := c.Switch.Do(func() error {
		sw, err := netlink.LinkByName(switchBridge)
		if err != nil {
			return err
		}
		entries, err := netlink.NeighList(0, unix.AF_BRIDGE)
		if err != nil {
			return fmt.Errorf("list the switch's fdb: %w", err)
		}
		for _, e := range entries {
			if e.MasterIndex != sw.Attrs().Index || !bytes.Equal(e.HardwareAddr, mac) {
				continue
			}
			l, err := netlink.LinkByIndex(e.LinkIndex)
			if err != nil {
				return err
			}
			port = l.Attrs().Name
		}
		return nil
	})
	return port, err
}

// AddPeer plugs a plain host into the switch: a netns "<ID>-<name>" whose
// eth0 (MAC 02:00:00:00:dd:<n>) holds addrs (IPv6 ones without DAD),
// cabled to the switch's port "port-<name>". It goes with the cluster.
func (c *Cluster) AddPeer(name string, n byte, addrs ...netip.Prefix) (harness.Netns, error) {
	ns, err := c.newNetns(name)
	if err != nil {
		return ns, err
	}
	if err := c.Switch.Do(cableAs(ns, name, "eth0")); err != nil {
		return ns, err
	}
	mac := net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0xdd, n}
	err = ns.Do(func() error {
		if err := linkUp("lo"); err != nil {
			return err
		}
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetHardwareAddr(l, mac); err != nil {
			return err
		}
		for _, addr := range addrs {
			a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}}
			if addr.Addr().Is6() {
				a.Flags = unix.IFA_F_NODAD
			}
			if err := netlink.AddrAdd(l, a); err != nil {
				return fmt.Errorf("address %s on peer %s: %w", addr, name, err)
			}
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		return ns, fmt.Errorf("set up peer %s: %w", name, err)
	}
	return ns, nil
}
