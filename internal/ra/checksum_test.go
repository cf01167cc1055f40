package ra_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/mdlayher/ndp"

	"github.com/tapbridge/tapbridge-cni/internal/ra"
)

var (
	routerLL  = netip.MustParseAddr("fe80::ff:fe00:fe")
	allNodes  = netip.MustParseAddr("ff02::1")
	guestLL   = netip.MustParseAddr("fe80::5054:ff:fe12:3456")
	allRouter = netip.MustParseAddr("ff02::2")
)

// sum is RFC 1071's one's-complement sum over the IPv6 pseudo-header
// (RFC 8200 8.1) and the message, written out here independently of the
// code under test: a message with a right checksum sums to 0xffff.
func sum(src, dst netip.Addr, msg []byte) uint16 {
	s, d := src.As16(), dst.As16()
	b := append(append(append([]byte{}, s[:]...), d[:]...), 0, 0, 0, 0, 0, 0, 0, 58)
	binary.BigEndian.PutUint32(b[32:36], uint32(len(msg)))
	b = append(b, msg...)
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	var acc uint32
	for i := 0; i < len(b); i += 2 {
		acc += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for acc > 0xffff {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

func fill(src, dst netip.Addr, msg []byte) []byte {
	out := append([]byte{}, msg...)
	binary.BigEndian.PutUint16(out[2:4], ra.Checksum(src, dst, out))
	return out
}

func TestChecksum(t *testing.T) {
	adv, err := ra.Advertisement(params())
	if err != nil {
		t.Fatal(err)
	}
	rs, err := ndp.MarshalMessage(&ndp.RouterSolicitation{Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: portMAC}}})
	if err != nil {
		t.Fatal(err)
	}
	rows := []struct {
		name     string
		src, dst netip.Addr
		msg      []byte
	}{
		{"advertisement to all nodes", routerLL, allNodes, adv},
		{"advertisement unicast", routerLL, guestLL, adv},
		{"solicitation", guestLL, allRouter, rs},
		{"solicitation from ::", netip.IPv6Unspecified(), allRouter, rs[:8]},
		{"odd length", guestLL, allRouter, append(append([]byte{}, rs...), 7)},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			out := fill(row.src, row.dst, row.msg)
			if s := sum(row.src, row.dst, out); s != 0xffff {
				t.Errorf("one's-complement sum with checksum %04x is %04x, want ffff", binary.BigEndian.Uint16(out[2:4]), s)
			}
			if !ra.ValidChecksum(row.src, row.dst, out) {
				t.Error("ValidChecksum false for a filled message")
			}
			// The field's old content does not matter.
			if c := ra.Checksum(row.src, row.dst, out); c != binary.BigEndian.Uint16(out[2:4]) {
				t.Errorf("checksum over a filled message %04x, want %04x", c, binary.BigEndian.Uint16(out[2:4]))
			}
			for _, bad := range [][]byte{flip(out, len(out)-1), flip(out, 2)} {
				if ra.ValidChecksum(row.src, row.dst, bad) {
					t.Errorf("ValidChecksum true for %x", bad)
				}
			}
			if ra.ValidChecksum(netip.MustParseAddr("fe80::dead"), row.dst, out) {
				t.Error("ValidChecksum true for another source address")
			}
		})
	}
}

// ndp computes the same checksum when it is given the addresses.
func TestChecksumMatchesNDP(t *testing.T) {
	m := &ndp.RouterAdvertisement{CurrentHopLimit: 64, ManagedConfiguration: true, RouterLifetime: 1800e9}
	want, err := ndp.MarshalMessageChecksum(m, routerLL, allNodes)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := ndp.MarshalMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := fill(routerLL, allNodes, plain); string(got) != string(want) {
		t.Fatalf("filled %x, ndp %x", got, want)
	}
}

func TestChecksumShort(t *testing.T) {
	for _, b := range [][]byte{nil, {133}, {133, 0, 0}} {
		if c := ra.Checksum(guestLL, allRouter, b); c != 0 {
			t.Errorf("Checksum(%x) = %04x, want 0", b, c)
		}
		if ra.ValidChecksum(guestLL, allRouter, b) {
			t.Errorf("ValidChecksum(%x) true", b)
		}
	}
}

func flip(b []byte, i int) []byte {
	out := append([]byte{}, b...)
	out[i] ^= 0x01
	return out
}
