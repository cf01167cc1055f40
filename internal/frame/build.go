package frame

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// Header is what every frame the agent sends needs: Ethernet and IP
// endpoints of one family.
type Header struct {
	Src, Dst     net.HardwareAddr
	IPSrc, IPDst netip.Addr
}

// UDP4 builds an Ethernet/IPv4/UDP frame (TTL 64, no options, DF clear)
// with both checksums.
func UDP4(h Header, srcPort, dstPort uint16, payload []byte) []byte {
	b := make([]byte, ethLen+ipv4Len+udpLen+len(payload))
	putEthernet(b, h, EtherTypeIPv4)
	ip := b[ethLen:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(ipv4Len+udpLen+len(payload)))
	ip[8] = 64
	ip[9] = ProtoUDP
	src, dst := h.IPSrc.As4(), h.IPDst.As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:12], ^fold(sum(0, ip[:ipv4Len])))
	udp := ip[ipv4Len:]
	putUDP(udp, srcPort, dstPort, payload)
	c := ^fold(sum(pseudo4(src, dst, ProtoUDP, len(udp)), udp))
	if c == 0 {
		c = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	binary.BigEndian.PutUint16(udp[6:8], c)
	return b
}

// UDP6 builds an Ethernet/IPv6/UDP frame (hop limit 64 unless given in
// hopLimit) with its mandatory checksum.
func UDP6(h Header, hopLimit uint8, srcPort, dstPort uint16, payload []byte) []byte {
	body := make([]byte, udpLen+len(payload))
	putUDP(body, srcPort, dstPort, payload)
	return ipv6(h, hopLimit, ProtoUDP, body, 6)
}

// ICMPv6 builds an Ethernet/IPv6/ICMPv6 frame around msg, a marshalled
// ICMPv6 message whose checksum field (bytes 2-3) is filled in here.
// Neighbour discovery needs hop limit 255.
func ICMPv6(h Header, hopLimit uint8, msg []byte) []byte {
	return ipv6(h, hopLimit, ProtoICMPv6, append([]byte(nil), msg...), 2)
}

// ipv6 frames body, whose checksum sits at body[at:at+2].
func ipv6(h Header, hopLimit uint8, proto uint8, body []byte, at int) []byte {
	if hopLimit == 0 {
		hopLimit = 64
	}
	b := make([]byte, ethLen+ipv6Len+len(body))
	putEthernet(b, h, EtherTypeIPv6)
	ip := b[ethLen:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(body)))
	ip[6] = proto
	ip[7] = hopLimit
	src, dst := h.IPSrc.As16(), h.IPDst.As16()
	copy(ip[8:24], src[:])
	copy(ip[24:40], dst[:])
	binary.BigEndian.PutUint16(body[at:at+2], 0)
	c := ^fold(sum(pseudo6(src, dst, proto, len(body)), body))
	if c == 0 && proto == ProtoUDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(body[at:at+2], c)
	copy(ip[ipv6Len:], body)
	return b
}

func putEthernet(b []byte, h Header, etherType uint16) {
	copy(b[0:6], h.Dst)
	copy(b[6:12], h.Src)
	binary.BigEndian.PutUint16(b[12:14], etherType)
}

func putUDP(b []byte, srcPort, dstPort uint16, payload []byte) {
	binary.BigEndian.PutUint16(b[0:2], srcPort)
	binary.BigEndian.PutUint16(b[2:4], dstPort)
	binary.BigEndian.PutUint16(b[4:6], uint16(udpLen+len(payload)))
	copy(b[udpLen:], payload)
}

func pseudo4(src, dst [4]byte, proto uint8, n int) uint32 {
	s := sum(0, src[:])
	s = sum(s, dst[:])
	return s + uint32(proto) + uint32(n)
}

func pseudo6(src, dst [16]byte, proto uint8, n int) uint32 {
	s := sum(0, src[:])
	s = sum(s, dst[:])
	return s + uint32(n>>16) + uint32(n&0xffff) + uint32(proto)
}

// sum adds b to s as big-endian 16-bit words (RFC 1071).
func sum(s uint32, b []byte) uint32 {
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}
