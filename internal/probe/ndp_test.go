package probe

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
)

var (
	ip6      = netip.MustParseAddr("2001:db8::7")
	ip6Other = netip.MustParseAddr("2001:db8::8")
	ip6Zero  = netip.IPv6Unspecified()
	allNodes = netip.MustParseAddr("ff02::1")
)

func TestSolicitedNode(t *testing.T) {
	tests := []struct{ ip, group, mac string }{
		{"2001:db8::7", "ff02::1:ff00:7", "33:33:ff:00:00:07"},
		{"fe80::1234:5678:9abc:def0", "ff02::1:ffbc:def0", "33:33:ff:bc:de:f0"},
	}
	for _, tt := range tests {
		group := solicitedNode(netip.MustParseAddr(tt.ip))
		if group.String() != tt.group {
			t.Errorf("solicitedNode(%s) = %s, want %s", tt.ip, group, tt.group)
		}
		if mac := multicastMAC(group).String(); mac != tt.mac {
			t.Errorf("multicastMAC(%s) = %s, want %s", group, mac, tt.mac)
		}
	}
}

func TestNeighborSolicitationBytes(t *testing.T) {
	want := []byte{
		0x33, 0x33, 0xff, 0x00, 0x00, 0x07, // Ethernet dst: solicited-node MAC
		0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // Ethernet src: self
		0x86, 0xdd, // EtherType IPv6
		0x60, 0, 0, 0, // version 6
		0, 24, // payload length
		58, 255, // next header ICMPv6, hop limit
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // src ::
		0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 7, // dst ff02::1:ff00:7
		135, 0, // NS, code 0
		0x4c, 0xe1, // checksum, computed independently (RFC 1071 sum in Python)
		0, 0, 0, 0, // reserved
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, // target
	}
	got := neighborSolicitation(selfMAC, ip6)
	if !bytes.Equal(got, want) {
		t.Fatalf("neighborSolicitation:\n got % x\nwant % x", got, want)
	}
}

func TestICMPv6Checksum(t *testing.T) {
	tests := []struct {
		target string
		want   uint16 // computed independently (RFC 1071 sum in Python)
	}{
		{"2001:db8::7", 0x4ce1},
		{"fe80::1234:5678:9abc:def0", 0xba20},
	}
	for _, tt := range tests {
		target := netip.MustParseAddr(tt.target)
		frame := neighborSolicitation(selfMAC, target)
		msg := frame[ethHeaderLen+ipv6HeaderLen:]
		if got := binary.BigEndian.Uint16(msg[2:]); got != tt.want {
			t.Errorf("%s: checksum %#04x, want %#04x", tt.target, got, tt.want)
		}
		// Summing over the message including its checksum must give
		// 0xffff, whose complement is 0: how receivers verify it.
		if got := icmpv6Checksum(ip6Zero, solicitedNode(target), msg); got != 0 {
			t.Errorf("%s: verification gives %#04x, want 0", tt.target, got)
		}
	}
}

func TestAddWordsOddLength(t *testing.T) {
	if got := addWords(0, []byte{0x12, 0x34, 0x56}); got != 0x1234+0x5600 {
		t.Errorf("addWords = %#x, want %#x", got, 0x1234+0x5600)
	}
}

// ndFrame builds an NS or NA as another node would send it.
func ndFrame(ethSrc net.HardwareAddr, typ byte, src, dst, target netip.Addr, hopLimit byte) []byte {
	msg := make([]byte, ndMsgLen)
	msg[0] = typ
	copy(msg[8:], target.AsSlice())
	binary.BigEndian.PutUint16(msg[2:], icmpv6Checksum(src, dst, msg))
	b := appendEthernet(nil, multicastMAC(dst), ethSrc, etherTypeIPv6)
	b = appendIPv6Header(b, src, dst, len(msg))
	b[ethHeaderLen+7] = hopLimit
	return append(b, msg...)
}

func TestParseND(t *testing.T) {
	// Padding after the IPv6 payload must be ignored.
	frame := append(ndFrame(otherMAC, icmpTypeNA, ip6, allNodes, ip6, 255), 0, 0, 0, 0)
	m, ok := parseND(frame)
	if !ok {
		t.Fatal("parseND rejected a valid NA")
	}
	if !bytes.Equal(m.ethSrc, otherMAC) || m.typ != icmpTypeNA || m.src != ip6 || m.target != ip6 {
		t.Errorf("parseND = %+v", m)
	}
}

func TestParseNDRejects(t *testing.T) {
	valid := ndFrame(otherMAC, icmpTypeNA, ip6, allNodes, ip6, 255)
	mutate := func(f func(b []byte)) []byte {
		b := bytes.Clone(valid)
		f(b)
		return b
	}
	const ip, icmp = ethHeaderLen, ethHeaderLen + ipv6HeaderLen
	tests := map[string][]byte{
		"empty":            nil,
		"truncated ipv6":   valid[:ip+ipv6HeaderLen-1],
		"truncated icmpv6": valid[:len(valid)-1],
		"short payload":    mutate(func(b []byte) { b[ip+5] = ndMsgLen - 1 }),
		"not ipv6":         mutate(func(b []byte) { b[12], b[13] = 0x08, 0x00 }),
		"ipv4 version":     mutate(func(b []byte) { b[ip] = 0x45 }),
		"extension header": mutate(func(b []byte) { b[ip+6] = 0 }),
		"forwarded":        mutate(func(b []byte) { b[ip+7] = 254 }),
		"nonzero code":     mutate(func(b []byte) { b[icmp+1] = 1 }),
		"router advert":    mutate(func(b []byte) { b[icmp] = 134 }),
	}
	for name, frame := range tests {
		if m, ok := parseND(frame); ok {
			t.Errorf("%s: parseND accepted %+v", name, m)
		}
	}
}

func TestNDConflict(t *testing.T) {
	snm := solicitedNode(ip6)
	tests := []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"owner defends (NA to all-nodes)", ndFrame(otherMAC, icmpTypeNA, ip6, allNodes, ip6, 255), true},
		{"NA from a proxy", ndFrame(otherMAC, icmpTypeNA, ip6Other, allNodes, ip6, 255), true},
		{"NA for another address", ndFrame(otherMAC, icmpTypeNA, ip6Other, allNodes, ip6Other, 255), false},
		{"another node's DAD for the address", ndFrame(otherMAC, icmpTypeNS, ip6Zero, snm, ip6, 255), true},
		{"another node's DAD for another address", ndFrame(otherMAC, icmpTypeNS, ip6Zero, solicitedNode(ip6Other), ip6Other, 255), false},
		{"third party resolving the address", ndFrame(otherMAC, icmpTypeNS, ip6Other, snm, ip6, 255), false},
		{"our own NS looped back", neighborSolicitation(selfMAC, ip6), false},
		{"NA from our MAC", ndFrame(selfMAC, icmpTypeNA, ip6, allNodes, ip6, 255), false},
		{"NA with wrong hop limit", ndFrame(otherMAC, icmpTypeNA, ip6, allNodes, ip6, 64), false},
		{"garbage", []byte{1, 2, 3}, false},
	}
	for _, tt := range tests {
		if got := ndConflict(tt.frame, selfMAC, ip6); got != tt.want {
			t.Errorf("%s: ndConflict = %v, want %v", tt.name, got, tt.want)
		}
	}
}
