// Package redirect moves frames between the pod end of the veth and the
// TAP with a tc mirred redirect in each direction (the Kata "tcfilter"
// model): no bridge in the pod, no MAC learning, and the pod's own IP stack
// never sees the VM's traffic. It uses u32 match-all filters, because
// kernels like this one have no matchall or flower, on the plain ingress
// qdisc rather than clsact: the redirect needs no egress hook, and every tc
// block is an entry on a machine-wide list the kernel walks when a block is
// added, so one block per device instead of two keeps ADD's cost flat as
// the node fills up.
package redirect

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrMissing is returned by Verify when a redirect is absent or wrong.
var ErrMissing = errors.New("redirect missing")

const prio = 1 // the only filter we own on each device

// Add installs both redirects between links a and b of the current netns.
func Add(a, b string) error { return bothWays(a, b, addOne) }

// bothWays runs fn for a -> b, then for b -> a.
func bothWays(a, b string, fn func(from, to netlink.Link) error) error {
	la, err := netlink.LinkByName(a)
	if err != nil {
		return fmt.Errorf("find %s: %w", a, err)
	}
	lb, err := netlink.LinkByName(b)
	if err != nil {
		return fmt.Errorf("find %s: %w", b, err)
	}
	if err := fn(la, lb); err != nil {
		return err
	}
	return fn(lb, la)
}

func addOne(from, to netlink.Link) error {
	if err := netlink.QdiscAdd(ingress(from)); err != nil {
		return fmt.Errorf("add ingress qdisc on %s: %w", from.Attrs().Name, err)
	}
	if err := netlink.FilterAdd(filter(from, to)); err != nil {
		return fmt.Errorf("add redirect %s -> %s: %w", from.Attrs().Name, to.Attrs().Name, err)
	}
	return nil
}

func ingress(l netlink.Link) *netlink.Ingress {
	return &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: l.Attrs().Index,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_INGRESS,
	}}
}

// filter matches every frame (a u32 selector with one all-zero key) and
// steals it onto the egress of "to".
func filter(from, to netlink.Link) *netlink.U32 {
	return &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: from.Attrs().Index,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Priority:  prio,
			Protocol:  unix.ETH_P_ALL,
		},
		Actions: []netlink.Action{netlink.NewMirredAction(to.Attrs().Index)},
	}
}

// Verify checks that a redirect from a to b and one from b to a exist.
func Verify(a, b string) error { return bothWays(a, b, verifyOne) }

func verifyOne(from, to netlink.Link) error {
	filters, err := netlink.FilterList(from, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return fmt.Errorf("list filters on %s: %w", from.Attrs().Name, err)
	}
	for _, f := range filters {
		if u, ok := f.(*netlink.U32); ok && redirectsTo(u, to.Attrs().Index) {
			return nil
		}
	}
	return fmt.Errorf("%w: no tc ingress redirect from %s to %s", ErrMissing, from.Attrs().Name, to.Attrs().Name)
}

func redirectsTo(u *netlink.U32, index int) bool {
	for _, a := range u.Actions {
		if m, ok := a.(*netlink.MirredAction); ok && m.MirredAction == netlink.TCA_EGRESS_REDIR && m.Ifindex == index {
			return true
		}
	}
	return false
}
