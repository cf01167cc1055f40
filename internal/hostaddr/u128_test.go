package hostaddr

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// refCandidates is the pool scan of Candidates done with math/big, the
// plain statement of what the u128 arithmetic must compute.
func refCandidates(p Policy, subnet netip.Prefix) []netip.Prefix {
	subnet = subnet.Masked()
	ranges := clip(p.Pool, subnet)
	size := func(r netip.Prefix) *big.Int {
		return new(big.Int).Lsh(big.NewInt(1), uint(r.Addr().BitLen()-r.Bits()))
	}
	total := new(big.Int)
	for _, r := range ranges {
		total.Add(total, size(r))
	}
	if total.Sign() == 0 {
		return nil
	}
	start := new(big.Int).Mod(new(big.Int).SetUint64(nodeHash(p.Node)), total)
	var out []netip.Prefix
	for i := int64(0); len(out) < maxPoolTries && big.NewInt(i).Cmp(total) < 0 && i < 2*maxPoolTries; i++ {
		idx := new(big.Int).Mod(new(big.Int).Add(start, big.NewInt(i)), total)
		var addr netip.Addr
		for _, r := range ranges {
			if idx.Cmp(size(r)) < 0 {
				b := new(big.Int).Add(new(big.Int).SetBytes(r.Addr().AsSlice()), idx).FillBytes(make([]byte, r.Addr().BitLen()/8))
				addr, _ = netip.AddrFromSlice(b)
				break
			}
			idx.Sub(idx, size(r))
		}
		last := new(big.Int).Add(new(big.Int).SetBytes(subnet.Addr().AsSlice()), new(big.Int).Sub(size(subnet), big.NewInt(1)))
		broadcast := addr.Is4() && subnet.Bits() < 31 && new(big.Int).SetBytes(addr.AsSlice()).Cmp(last) == 0
		if addr.IsValid() && addr != subnet.Addr() && !broadcast {
			out = append(out, netip.PrefixFrom(addr, subnet.Bits()))
		}
	}
	return out
}

// TestCandidatesMatchBigIntArithmetic compares the scan with the math/big
// statement of it over random pools and subnets of both families, from
// /0 (where u128 saturates) to host routes.
func TestCandidatesMatchBigIntArithmetic(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	randPrefix := func(v6 bool, bits int) netip.Prefix {
		var a netip.Addr
		if v6 {
			var b [16]byte
			for i := range b {
				b[i] = byte(r.UintN(256))
			}
			a = netip.AddrFrom16(b)
		} else {
			a = netip.AddrFrom4([4]byte{byte(r.UintN(256)), byte(r.UintN(256)), byte(r.UintN(256)), byte(r.UintN(256))})
		}
		return netip.PrefixFrom(a, bits).Masked()
	}
	nonEmpty := 0
	for i := range 20000 {
		v6 := r.UintN(2) == 0
		width := 32
		if v6 {
			width = 128
		}
		subnet := randPrefix(v6, int(r.UintN(uint(width+1))))
		var pool []netip.Prefix
		for range 1 + r.UintN(3) {
			// Pools around the subnet: wider, narrower, or elsewhere.
			bits := min(width, max(0, subnet.Bits()+int(r.UintN(9))-3))
			base := randPrefix(v6, width)
			if r.UintN(4) != 0 {
				base = netip.PrefixFrom(addrAt(subnet.Addr(), u128{lo: r.Uint64() % 1024}), width)
			}
			pool = append(pool, netip.PrefixFrom(base.Addr(), bits).Masked())
		}
		p := Policy{Node: fmt.Sprintf("node-%d", i), Pool: pool}
		got, want := Candidates(p, subnet), refCandidates(p, subnet)
		if len(want) > 0 {
			nonEmpty++
		}
		if !slices.Equal(got, want) {
			t.Fatalf("pool %v subnet %v: got %v, want %v", pool, subnet, got, want)
		}
	}
	// A comparison of empty scans would prove nothing.
	if nonEmpty < 5000 {
		t.Fatalf("only %d of 20000 random cases had candidates", nonEmpty)
	}
}
