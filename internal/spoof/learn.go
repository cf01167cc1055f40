package spoof

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// ErrNoLearnedSet is returned by Learn and Learned for a port whose table
// has no set of learned link-locals (it does not learn, or is gone).
var ErrNoLearnedSet = errors.New("port has no set of learned link-locals")

// IsLearnable reports whether a is a link-local a port may learn: a
// unicast address of fe80::/64, the only prefix a guest's stack forms
// its link-local in (RFC 4291 2.5.6).
func IsLearnable(a netip.Addr) bool {
	b := a.As16()
	return a.Is6() && !a.Is4In6() && a.Zone() == "" &&
		b[0] == 0xfe && b[1] == 0x80 && b[2]|b[3]|b[4]|b[5]|b[6]|b[7] == 0
}

// Learn makes a the port's one learned link-local, replacing whatever
// the set held, in one transaction: a packet sees the old address or the
// new one, never both or neither. One address per port bounds what a
// guest can claim of fe80::/64; a guest that claims a new link-local (DAD
// from ::) has stopped using the old one.
func Learn(port string, a netip.Addr) error {
	if err := checkIfName("port", port); err != nil {
		return fmt.Errorf("learn link-local for port %s: %w", port, err)
	}
	if !IsLearnable(a) {
		return fmt.Errorf("learn link-local for port %s: %s is not a unicast address of fe80::/64", port, a)
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("learn link-local for port %s: open netlink: %w", port, err)
	}
	set := learnedOf(tableOf(port))
	c.FlushSet(set)
	b := a.As16()
	if err := c.SetAddElements(set, []nftables.SetElement{{Key: b[:]}}); err != nil {
		return fmt.Errorf("learn link-local %s for port %s: %w", a, port, err)
	}
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			err = ErrNoLearnedSet
		}
		return fmt.Errorf("learn link-local %s for port %s: %w", a, port, err)
	}
	return nil
}

// Learned returns the link-locals in the port's set (a GETSET and a
// GETSETELEM dump of the port's own set, whatever the number of ports).
func Learned(port string) ([]netip.Addr, error) {
	if err := checkIfName("port", port); err != nil {
		return nil, fmt.Errorf("read learned link-locals of port %s: %w", port, err)
	}
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("read learned link-locals of port %s: open netlink: %w", port, err)
	}
	// The library's element dump does not wrap its errno: ask for the set
	// first, whose answer does.
	set, err := c.GetSetByName(tableOf(port), learnedSet)
	if errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("read learned link-locals of port %s: %w", port, ErrNoLearnedSet)
	}
	if err != nil {
		return nil, fmt.Errorf("read learned link-locals of port %s: %w", port, err)
	}
	elems, err := c.GetSetElements(set)
	if err != nil {
		return nil, fmt.Errorf("read learned link-locals of port %s: %w", port, err)
	}
	out := make([]netip.Addr, 0, len(elems))
	for _, e := range elems {
		if a, ok := netip.AddrFromSlice(e.Key); ok && a.Is6() {
			out = append(out, a)
		}
	}
	return out, nil
}
