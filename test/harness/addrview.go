package harness

import (
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AddrView is what the admin sees of a bridge in `ip -j addr` and sysctl:
// its global addresses with their flags (which one is primary), the
// subnet routes of both families, and its promote_secondaries switch.
// State leaves these out; the tests of the admin's addresses compare them.
type AddrView struct {
	Addrs   []string // "10.77.0.5/24 permanent secondary", in the kernel's order
	Routes  []string // "10.77.0.0/24", "fd77::/64": the bridge's prefix routes
	Promote string   // net/ipv4/conf/<bridge>/promote_secondaries
}

// ReadAddrView reads the bridge's view in the calling thread's netns.
func ReadAddrView(bridge string) (AddrView, error) {
	var v AddrView
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return v, fmt.Errorf("bridge %s: %w", bridge, err)
	}
	addrs, err := netlink.AddrList(br, unix.AF_UNSPEC)
	if err != nil {
		return v, fmt.Errorf("list addresses of %s: %w", bridge, err)
	}
	for _, a := range addrs {
		if !a.IP.IsLinkLocalUnicast() {
			v.Addrs = append(v.Addrs, a.IPNet.String()+addrFlags(a.Flags))
		}
	}
	if v.Routes, err = prefixRoutes(br); err != nil {
		return v, err
	}
	v.Promote, err = Promotion(bridge)
	return v, err
}

var flagNames = []struct {
	bit  int
	name string
}{
	{unix.IFA_F_SECONDARY, "secondary"}, {unix.IFA_F_NODAD, "nodad"}, {unix.IFA_F_DADFAILED, "dadfailed"},
	{unix.IFA_F_DEPRECATED, "deprecated"}, {unix.IFA_F_TENTATIVE, "tentative"}, {unix.IFA_F_PERMANENT, "permanent"},
	{unix.IFA_F_NOPREFIXROUTE, "noprefixroute"},
}

func addrFlags(flags int) string {
	var s string
	for _, f := range flagNames {
		if flags&f.bit != 0 {
			s += " " + f.name
		}
	}
	return s
}

func prefixRoutes(br netlink.Link) ([]string, error) {
	routes, err := netlink.RouteList(br, unix.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("list routes of %s: %w", br.Attrs().Name, err)
	}
	var out []string
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsLinkLocalUnicast() || r.Dst.IP.IsMulticast() {
			continue
		}
		p, _ := netip.ParsePrefix(r.Dst.String())
		out = append(out, p.String())
	}
	sort.Strings(out)
	return out, nil
}

func promotePath(bridge string) string {
	return "/proc/sys/net/ipv4/conf/" + bridge + "/promote_secondaries"
}

// Promotion reads the bridge's promote_secondaries.
func Promotion(bridge string) (string, error) {
	b, err := os.ReadFile(promotePath(bridge))
	return strings.TrimSpace(string(b)), err
}

// SetPromotion writes the bridge's promote_secondaries (a bridge in a
// netns the test made).
func SetPromotion(bridge, value string) error {
	return os.WriteFile(promotePath(bridge), []byte(value), 0)
}

// AddAdminAddr adds an address to the bridge as an admin would (`ip addr
// add`; IPv6 without DAD, so no tentative phase shows in a view).
func AddAdminAddr(bridge string, p netip.Prefix) error {
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", bridge, err)
	}
	a, err := netlink.ParseAddr(p.String())
	if err != nil {
		return err
	}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := netlink.AddrAdd(br, a); err != nil {
		return fmt.Errorf("add %s to %s: %w", p, bridge, err)
	}
	return nil
}

// DelAdminAddr removes an address the test added.
func DelAdminAddr(bridge string, p netip.Prefix) error {
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", bridge, err)
	}
	a, err := netlink.ParseAddr(p.String())
	if err != nil {
		return err
	}
	if err := netlink.AddrDel(br, a); err != nil {
		return fmt.Errorf("remove %s from %s: %w", p, bridge, err)
	}
	return nil
}
