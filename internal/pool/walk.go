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
	for n := new(big.Int); n.Cmp(size) < 0; {
		a, r := s.At(i)
		if r.Contains(a) && !taken[a] && !yield(a, r) {
			return
		}
		// An excluded prefix is stepped over whole, not address by
		// address: a /65 excluded from a /64 is 2^63 of them.
		step := one
		if skip := r.excludedAfter(a); skip.Sign() > 0 {
			step = new(big.Int).Add(skip, one)
		}
		n.Add(n, step)
		if i.Add(i, step); i.Cmp(size) >= 0 {
			i.SetInt64(0) // wrap to the set's first address (a skip ends at its range's end)
		}
	}
}

// excludedAfter is how many addresses of r follow a inside the excluded
// prefix that holds a (0 when none holds it), never past r's last.
func (r Range) excludedAfter(a netip.Addr) *big.Int {
	for _, x := range r.Exclude {
		if !x.Contains(a) {
			continue
		}
		last := new(big.Int).Lsh(big.NewInt(1), uint(a.BitLen()-x.Bits()))
		last.Add(last, toInt(x.Masked().Addr()))
		last.Sub(last, big.NewInt(1))
		if end := toInt(r.To); last.Cmp(end) > 0 {
			last = end
		}
		return last.Sub(last, toInt(a))
	}
	return new(big.Int)
}
