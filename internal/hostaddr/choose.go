// Package hostaddr makes sure the node owns an address on the host bridge
// in every subnet its VMs use, so node and VMs talk on-link. The address is
// reference-counted per (bridge, subnet) across every network on the node:
// added for the first attachment that needs it, removed with the last.
package hostaddr

import (
	"hash/fnv"
	"net/netip"
)

// Policy says where a node's address on a subnet may come from, after an
// address of the admin's already on the bridge.
type Policy struct {
	Node   string
	Static []netip.Prefix // this node's explicit addresses
	Pool   []netip.Prefix // ranges shared by all nodes
}

func (p Policy) isStatic(a netip.Addr) bool {
	for _, s := range p.Static {
		if s.Addr() == a {
			return true
		}
	}
	return false
}

// maxPoolTries bounds the probes one ADD may spend on a crowded pool.
const maxPoolTries = 32

// Candidates lists, in order of preference, the addresses this node may
// take on subnet: its static address in the subnet, else pool addresses
// starting at a per-node offset (a hash of the node name) so that nodes
// seldom probe for the same one.
func Candidates(p Policy, subnet netip.Prefix) []netip.Prefix {
	subnet = subnet.Masked()
	for _, s := range p.Static {
		if subnet.Contains(s.Addr()) {
			return []netip.Prefix{netip.PrefixFrom(s.Addr(), subnet.Bits())}
		}
	}
	ranges := clip(p.Pool, subnet)
	var total u128
	for _, r := range ranges {
		total = total.add(sizeOf(r))
	}
	if total == (u128{}) {
		return nil
	}
	start := total.modOf(nodeHash(p.Node))
	// Scan a little more than we return, to step over unusable addresses.
	limit := uint64(2 * maxPoolTries)
	if total.hi == 0 && total.lo < limit {
		limit = total.lo
	}
	var out []netip.Prefix
	for i := uint64(0); i < limit && len(out) < maxPoolTries; i++ {
		// start < total and i < total, so one subtraction wraps the index.
		idx := start.add(u128{lo: i})
		if !idx.less(total) {
			idx = idx.sub(total)
		}
		addr := nth(ranges, idx)
		if usable(addr, subnet) {
			out = append(out, netip.PrefixFrom(addr, subnet.Bits()))
		}
	}
	return out
}

// clip keeps the part of each pool range that lies in subnet.
func clip(pool []netip.Prefix, subnet netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range pool {
		switch {
		case r.Addr().BitLen() != subnet.Addr().BitLen():
		case subnet.Bits() <= r.Bits() && subnet.Contains(r.Addr()):
			out = append(out, r)
		case r.Bits() < subnet.Bits() && r.Contains(subnet.Addr()):
			out = append(out, subnet)
		}
	}
	return out
}

// nth returns the idx-th address across ranges.
func nth(ranges []netip.Prefix, idx u128) netip.Addr {
	for _, r := range ranges {
		n := sizeOf(r)
		if idx.less(n) {
			return addrAt(r.Addr(), idx)
		}
		idx = idx.sub(n)
	}
	return netip.Addr{}
}

// usable excludes the subnet's own address and, for IPv4, its broadcast.
func usable(a netip.Addr, subnet netip.Prefix) bool {
	if !a.IsValid() || a == subnet.Addr() {
		return false
	}
	if a.Is4() && subnet.Bits() < 31 {
		return a != addrAt(subnet.Addr(), sizeOf(subnet).sub(u128{lo: 1}))
	}
	return true
}

func nodeHash(node string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(node))
	return h.Sum64()
}
