package pool

import (
	"crypto/rand"
	"math/big"
	"net/netip"
)

// Walk yields the set's free candidates (not in taken, allowed by their
// range) starting at a random offset and wrapping once around, so that
// concurrent allocators on different nodes rarely try the same address
// first. yield returns false to stop.
func (s Set) Walk(taken map[netip.Addr]bool, yield func(netip.Addr, Range) bool) {
	size := s.Size()
	if size.Sign() == 0 {
		return
	}
	start, err := rand.Int(rand.Reader, size)
	if err != nil {
		start = new(big.Int)
	}
	one := big.NewInt(1)
	i := new(big.Int).Set(start)
	for n := new(big.Int); n.Cmp(size) < 0; n.Add(n, one) {
		a, r := s.At(i)
		if r.Contains(a) && !taken[a] && !yield(a, r) {
			return
		}
		if i.Add(i, one); i.Cmp(size) >= 0 {
			i.SetInt64(0)
		}
	}
}
