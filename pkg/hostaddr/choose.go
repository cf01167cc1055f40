// Package hostaddr makes sure the node owns an address on the host bridge
// in every subnet its VMs use, so node and VMs talk on-link. The address is
// reference-counted per (bridge, subnet) across every network on the node:
// added for the first attachment that needs it, removed with the last.
package hostaddr

import (
	"hash/fnv"
	"math/big"
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
	total := new(big.Int)
	for _, r := range ranges {
		total.Add(total, size(r))
	}
	if total.Sign() == 0 {
		return nil
	}
	start := new(big.Int).Mod(new(big.Int).SetUint64(nodeHash(p.Node)), total)
	// Scan a little more than we return, to step over unusable addresses.
	limit := int64(2 * maxPoolTries)
	if total.IsInt64() && total.Int64() < limit {
		limit = total.Int64()
	}
	var out []netip.Prefix
	for i := int64(0); i < limit && len(out) < maxPoolTries; i++ {
		idx := new(big.Int).Add(start, big.NewInt(i))
		addr := nth(ranges, idx.Mod(idx, total))
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

func size(p netip.Prefix) *big.Int {
	return new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits()))
}

// nth returns the idx-th address across ranges.
func nth(ranges []netip.Prefix, idx *big.Int) netip.Addr {
	for _, r := range ranges {
		n := size(r)
		if idx.Cmp(n) < 0 {
			base := new(big.Int).SetBytes(r.Addr().AsSlice())
			b := base.Add(base, idx).FillBytes(make([]byte, r.Addr().BitLen()/8))
			addr, _ := netip.AddrFromSlice(b)
			return addr
		}
		idx = new(big.Int).Sub(idx, n)
	}
	return netip.Addr{}
}

// usable excludes the subnet's own address and, for IPv4, its broadcast.
func usable(a netip.Addr, subnet netip.Prefix) bool {
	if !a.IsValid() || a == subnet.Addr() {
		return false
	}
	if a.Is4() && subnet.Bits() < 31 {
		last := new(big.Int).Add(new(big.Int).SetBytes(subnet.Addr().AsSlice()), new(big.Int).Sub(size(subnet), big.NewInt(1)))
		return new(big.Int).SetBytes(a.AsSlice()).Cmp(last) != 0
	}
	return true
}

func nodeHash(node string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(node))
	return h.Sum64()
}
