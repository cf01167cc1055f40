package frame

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
)

var (
	macA = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	macB = net.HardwareAddr{2, 0, 0, 0, 0, 2}
)

// verifies is RFC 1071's receiver check: the sum over the data with its
// checksum in place folds to all ones.
func verifies(pseudo uint32, b []byte) bool { return fold(sum(pseudo, b)) == 0xffff }

func TestUDP4RoundTrip(t *testing.T) {
	h := Header{Src: macA, Dst: macB, IPSrc: netip.MustParseAddr("10.0.0.1"), IPDst: netip.MustParseAddr("255.255.255.255")}
	payload := []byte("a dhcp message, odd length")
	b := UDP4(h, 67, 68, payload)
	p, err := Parse(append(b, 0, 0, 0, 0)) // Ethernet padding is not payload
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.Src, macA) || !bytes.Equal(p.Dst, macB) || p.IPSrc != h.IPSrc || p.IPDst != h.IPDst ||
		p.Proto != ProtoUDP || p.SrcPort != 67 || p.DstPort != 68 || !bytes.Equal(p.Payload, payload) {
		t.Errorf("parsed %+v", p)
	}
	ip := b[ethLen : ethLen+ipv4Len]
	udp := b[ethLen+ipv4Len:]
	if !verifies(0, ip) || !verifies(pseudo4(h.IPSrc.As4(), h.IPDst.As4(), ProtoUDP, len(udp)), udp) {
		t.Error("checksums do not verify")
	}
}

func TestIPv6RoundTrip(t *testing.T) {
	h := Header{Src: macA, Dst: macB, IPSrc: netip.MustParseAddr("fe80::1"), IPDst: netip.MustParseAddr("ff02::1")}
	for _, c := range []struct {
		name  string
		frame []byte
		proto uint8
	}{
		{"udp", UDP6(h, 0, 547, 546, []byte("reply")), ProtoUDP},
		{"icmpv6", ICMPv6(h, 255, []byte{134, 0, 0, 0, 64, 0xc0, 0, 0}), ProtoICMPv6},
	} {
		p, err := Parse(c.frame)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		body := c.frame[ethLen+ipv6Len:]
		if p.Proto != c.proto || p.IPSrc != h.IPSrc || p.IPDst != h.IPDst ||
			!verifies(pseudo6(h.IPSrc.As16(), h.IPDst.As16(), c.proto, len(body)), body) {
			t.Errorf("%s: parsed %+v or bad checksum", c.name, p)
		}
	}
}

func TestParseBad(t *testing.T) {
	h := Header{Src: macA, Dst: macB, IPSrc: netip.MustParseAddr("10.0.0.1"), IPDst: netip.MustParseAddr("10.0.0.2")}
	good := UDP4(h, 68, 67, []byte("x"))
	fragment := append([]byte(nil), good...)
	fragment[ethLen+6] = 0x20 // more fragments
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"ethernet only", good[:ethLen], ErrTruncated},
		{"cut ip", good[:ethLen+10], ErrTruncated},
		{"cut udp", good[:ethLen+ipv4Len+4], ErrTruncated},
		{"cut payload", good[:len(good)-1], ErrTruncated},
		{"fragment", fragment, ErrUnsupported},
		{"arp", append(append([]byte(nil), good[:12]...), 0x08, 0x06), ErrUnsupported},
	} {
		if _, err := Parse(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}
