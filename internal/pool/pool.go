// Package pool is the address space an IPAM hands out: sets of ranges
// (one address per set, as host-local's "ranges"), each a span of a
// subnet less its excluded prefixes and gateway. It is pure arithmetic,
// with no notion of who holds what.
package pool

import (
	"fmt"
	"math/big"
	"net/netip"
)

// Range is one span of a subnet.
type Range struct {
	Subnet   netip.Prefix // masked
	From, To netip.Addr   // inclusive
	Gateway  netip.Addr   // invalid when none; never handed out
	Exclude  []netip.Prefix
}

// Set is the ranges one address may come from, in order (one family).
type Set []Range

// NewRange checks a subnet span: start and end default to the first and
// last usable address (IPv4 leaves out the network and broadcast
// addresses, IPv6 the subnet-router anycast address).
func NewRange(subnet netip.Prefix, start, end, gateway netip.Addr, exclude []netip.Prefix) (Range, error) {
	subnet = subnet.Masked()
	r := Range{Subnet: subnet, Gateway: gateway, Exclude: exclude}
	first, last := subnet.Addr().Next(), broadcast(subnet)
	if subnet.Addr().Is4() {
		last = last.Prev()
	}
	if subnet.Bits() >= subnet.Addr().BitLen()-1 {
		first, last = subnet.Addr(), broadcast(subnet) // /31, /32, /127, /128: every address
	}
	r.From, r.To = first, last
	for name, a := range map[string]netip.Addr{"rangeStart": start, "rangeEnd": end, "gateway": gateway} {
		if a.IsValid() && !subnet.Contains(a) {
			return Range{}, fmt.Errorf("%s %s is not in subnet %s", name, a, subnet)
		}
	}
	if start.IsValid() {
		r.From = start
	}
	if end.IsValid() {
		r.To = end
	}
	if r.To.Less(r.From) {
		return Range{}, fmt.Errorf("range %s-%s of %s is empty", r.From, r.To, subnet)
	}
	for _, x := range exclude {
		if x.Addr().Is4() != subnet.Addr().Is4() {
			return Range{}, fmt.Errorf("exclude %s is not of the family of %s", x, subnet)
		}
	}
	return r, nil
}

func (r Range) String() string { return fmt.Sprintf("%s (%s-%s)", r.Subnet, r.From, r.To) }

// Contains reports whether the range may hand out a.
func (r Range) Contains(a netip.Addr) bool {
	if a.Less(r.From) || r.To.Less(a) || a == r.Gateway {
		return false
	}
	for _, x := range r.Exclude {
		if x.Contains(a) {
			return false
		}
	}
	return true
}

// Size is the number of addresses from From to To, excluded ones counted.
func (r Range) Size() *big.Int {
	n := new(big.Int).Sub(toInt(r.To), toInt(r.From))
	return n.Add(n, big.NewInt(1))
}

// Find is the range of the set that may hand out a, or false.
func (s Set) Find(a netip.Addr) (Range, bool) {
	for _, r := range s {
		if r.Contains(a) {
			return r, true
		}
	}
	return Range{}, false
}

func (s Set) String() string {
	out := ""
	for i, r := range s {
		if i > 0 {
			out += ", "
		}
		out += r.String()
	}
	return out
}

// Size is the sum of the ranges' sizes.
func (s Set) Size() *big.Int {
	n := new(big.Int)
	for _, r := range s {
		n.Add(n, r.Size())
	}
	return n
}

// At is the i-th address of the set counting range after range (i below
// Size), whether or not it may be handed out.
func (s Set) At(i *big.Int) (netip.Addr, Range) {
	i = new(big.Int).Set(i)
	for _, r := range s {
		if size := r.Size(); i.Cmp(size) < 0 {
			return fromInt(new(big.Int).Add(toInt(r.From), i), r.From.Is4()), r
		} else {
			i.Sub(i, size)
		}
	}
	return netip.Addr{}, Range{}
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	host := p.Addr().BitLen() - p.Bits()
	for i := len(b) - 1; host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func toInt(a netip.Addr) *big.Int { return new(big.Int).SetBytes(a.AsSlice()) }

func fromInt(n *big.Int, v4 bool) netip.Addr {
	size := 16
	if v4 {
		size = 4
	}
	b := make([]byte, size)
	n.FillBytes(b)
	a, _ := netip.AddrFromSlice(b)
	return a
}
