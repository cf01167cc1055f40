package pool

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/big"
	"net/netip"
)

// Candidates yields up to n addresses of the set that its ranges may hand
// out, drawn from a sequence that seed alone decides: the same seed gives
// the same addresses in the same order, two seeds rarely share their
// first. A caller that tries them in order needs no list of what is
// taken while the set is sparse, and two callers with one seed (two pods
// of one IPAMClaim) try the same address first. Draws that land on an
// address the set may not hand out (gateway, excluded) are skipped, at
// most 8n draws in all, so a set mostly excluded yields fewer. yield
// returns false to stop.
func (s Set) Candidates(seed string, n int, yield func(netip.Addr, Range) bool) {
	size := s.Size()
	if size.Sign() == 0 {
		return
	}
	seen := map[netip.Addr]bool{}
	for draw, got := 0, 0; draw < 8*n && got < n; draw++ {
		a, r := s.At(drawIndex(seed, draw, size))
		if !r.Contains(a) || seen[a] {
			continue
		}
		seen[a] = true
		got++
		if !yield(a, r) {
			return
		}
	}
}

// drawIndex is the draw-th index of seed's sequence, below size.
func drawIndex(seed string, draw int, size *big.Int) *big.Int {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(draw))
	sum := sha256.Sum256(append([]byte(seed+"\x00"), n[:]...))
	return new(big.Int).Mod(new(big.Int).SetBytes(sum[:]), size)
}

// Refusal says why the set does not hand out a ("" when it does): the
// range whose subnet holds it, and what keeps it out.
func (s Set) Refusal(a netip.Addr) string {
	if _, ok := s.Find(a); ok {
		return ""
	}
	for _, r := range s {
		if !r.Subnet.Contains(a) {
			continue
		}
		switch {
		case a == r.Gateway:
			return fmt.Sprintf("it is the gateway of %s", r)
		case a.Less(r.From) || r.To.Less(a):
			return fmt.Sprintf("it is outside %s", r)
		}
		for _, x := range r.Exclude {
			if x.Contains(a) {
				return fmt.Sprintf("%s of %s excludes it", x, r)
			}
		}
	}
	return fmt.Sprintf("no range of %s holds it", s)
}
