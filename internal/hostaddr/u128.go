package hostaddr

import (
	"encoding/binary"
	"math"
	"math/bits"
	"net/netip"
)

// u128 is an address offset or a count of addresses: IPv6 ranges outgrow
// uint64. (math/big would do, at the cost of code the kernel maps in at
// every exec of the plugin.)
type u128 struct{ hi, lo uint64 }

var maxU128 = u128{math.MaxUint64, math.MaxUint64}

// add saturates at 2^128-1, which only a whole IPv6 space (a /0 range, or
// pools adding up to more) reaches; the scan then skips its last address.
func (a u128) add(b u128) u128 {
	lo, carry := bits.Add64(a.lo, b.lo, 0)
	hi, carry := bits.Add64(a.hi, b.hi, carry)
	if carry != 0 {
		return maxU128
	}
	return u128{hi, lo}
}

// sub needs a >= b.
func (a u128) sub(b u128) u128 {
	lo, borrow := bits.Sub64(a.lo, b.lo, 0)
	hi, _ := bits.Sub64(a.hi, b.hi, borrow)
	return u128{hi, lo}
}

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

// modOf returns v mod a, for a non-zero a.
func (a u128) modOf(v uint64) u128 {
	if a.hi != 0 {
		return u128{lo: v} // v < 2^64 <= a
	}
	return u128{lo: v % a.lo}
}

// sizeOf is the number of addresses in p, saturated (see add).
func sizeOf(p netip.Prefix) u128 {
	switch n := p.Addr().BitLen() - p.Bits(); {
	case n >= 128:
		return maxU128
	case n >= 64:
		return u128{hi: 1 << (n - 64)}
	default:
		return u128{lo: 1 << n}
	}
}

// addrAt is base + off, in base's family; off stays inside base's range.
func addrAt(base netip.Addr, off u128) netip.Addr {
	b := base.As16()
	v := u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}.add(off)
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	a := netip.AddrFrom16(b)
	if base.Is4() {
		return a.Unmap()
	}
	return a
}
