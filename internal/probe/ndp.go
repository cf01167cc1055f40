package probe

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
)

const (
	ipv6HeaderLen = 40
	protoICMPv6   = 58
	// ndHopLimit is mandatory for ND: receivers drop ND messages with any
	// other hop limit, which proves they were not forwarded from off-link
	// (RFC 4861 sections 7.1.1 and 7.1.2).
	ndHopLimit = 255

	icmpTypeNS = 135
	icmpTypeNA = 136
	// ndMsgLen is an NS/NA without options: type, code, checksum,
	// reserved/flags and the 16-byte target address.
	ndMsgLen = 24
)

// allNodesMAC is the MAC of ff02::1, where a node defending its address
// against DAD sends its neighbour advertisement (RFC 4862 section 5.4.3).
var allNodesMAC = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}

// solicitedNode returns the solicited-node multicast group of ip
// (ff02::1:ffXX:XXXX, RFC 4291 section 2.7.1).
func solicitedNode(ip netip.Addr) netip.Addr {
	a := ip.As16()
	return netip.AddrFrom16([16]byte{
		0xff, 0x02, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 1, 0xff, a[13], a[14], a[15],
	})
}

// multicastMAC maps an IPv6 multicast group to its Ethernet address
// (33:33 followed by the group's low 32 bits, RFC 2464 section 7).
func multicastMAC(group netip.Addr) net.HardwareAddr {
	a := group.As16()
	return net.HardwareAddr{0x33, 0x33, a[12], a[13], a[14], a[15]}
}

// neighborSolicitation builds a DAD neighbour solicitation for target, sent
// from mac (RFC 4862 section 5.4.2). The source is :: because we do not own
// target yet, and for that reason it must carry no source link-layer address
// option; it goes to the solicited-node group of target, the only group the
// current owner is sure to listen on.
func neighborSolicitation(mac net.HardwareAddr, target netip.Addr) []byte {
	src, dst := netip.IPv6Unspecified(), solicitedNode(target)

	msg := make([]byte, ndMsgLen)
	msg[0] = icmpTypeNS
	t := target.As16()
	copy(msg[8:], t[:])
	binary.BigEndian.PutUint16(msg[2:], icmpv6Checksum(src, dst, msg))

	b := make([]byte, 0, ethHeaderLen+ipv6HeaderLen+len(msg))
	b = appendEthernet(b, multicastMAC(dst), mac, etherTypeIPv6)
	b = appendIPv6Header(b, src, dst, len(msg))
	return append(b, msg...)
}

// appendIPv6Header appends a fixed IPv6 header for an ND message.
func appendIPv6Header(b []byte, src, dst netip.Addr, payloadLen int) []byte {
	b = append(b, 0x60, 0, 0, 0) // version 6, traffic class 0, flow label 0
	b = binary.BigEndian.AppendUint16(b, uint16(payloadLen))
	b = append(b, protoICMPv6, ndHopLimit)
	s, d := src.As16(), dst.As16()
	b = append(b, s[:]...)
	return append(b, d[:]...)
}

// icmpv6Checksum returns the ICMPv6 checksum of msg (RFC 4443 section 2.3):
// the one's complement of the one's complement sum over the IPv6
// pseudo-header (RFC 8200 section 8.1) and msg. The checksum field of msg
// must be zero when building; over a received message the result is 0 if the
// checksum is correct.
func icmpv6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	s, d := src.As16(), dst.As16()
	var sum uint64
	sum = addWords(sum, s[:])
	sum = addWords(sum, d[:])
	sum += uint64(len(msg)) // 32-bit upper-layer length; our messages are short
	sum += protoICMPv6      // 24 zero bits, then the next header
	sum = addWords(sum, msg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// addWords adds b to sum as big-endian 16-bit words, zero-padding an odd
// trailing byte.
func addWords(sum uint64, b []byte) uint64 {
	for len(b) >= 2 {
		sum += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint64(b[0]) << 8
	}
	return sum
}

// ndMessage holds the fields of an NS or NA that matter for DAD.
type ndMessage struct {
	ethSrc net.HardwareAddr
	typ    uint8
	src    netip.Addr // IPv6 source address
	target netip.Addr
}

// parseND decodes an Ethernet frame carrying an IPv6 neighbour solicitation
// or advertisement. ND messages are sent without extension headers, so
// anything else is not ND for our purposes. The ICMPv6 checksum is not
// verified: the Ethernet FCS already guards the frame, and a corrupted frame
// can at worst make the address look taken, which is the safe direction.
func parseND(frame []byte) (ndMessage, bool) {
	src, etherType, ip6, ok := parseEthernet(frame)
	if !ok || etherType != etherTypeIPv6 || len(ip6) < ipv6HeaderLen {
		return ndMessage{}, false
	}
	if ip6[0]>>4 != 6 || ip6[6] != protoICMPv6 || ip6[7] != ndHopLimit {
		return ndMessage{}, false
	}
	msg := ip6[ipv6HeaderLen:]
	// Trim Ethernet padding beyond the IPv6 payload.
	if n := int(binary.BigEndian.Uint16(ip6[4:])); n < len(msg) {
		msg = msg[:n]
	}
	if len(msg) < ndMsgLen || msg[1] != 0 || (msg[0] != icmpTypeNS && msg[0] != icmpTypeNA) {
		return ndMessage{}, false
	}
	return ndMessage{
		ethSrc: src,
		typ:    msg[0],
		src:    netip.AddrFrom16([16]byte(ip6[8:24])),
		target: netip.AddrFrom16([16]byte(msg[8:24])),
	}, true
}

// ndConflict reports whether frame shows another node using or claiming ip
// (RFC 4862 section 5.4.3/5.4.4): an advertisement for ip, or another node's
// DAD solicitation for ip (source ::). A solicitation from a real source is
// ordinary address resolution by a third party and says nothing about who
// owns ip. Frames from self are ignored so that our own solicitation, looped
// back by the link, is not taken for a competitor.
func ndConflict(frame []byte, self net.HardwareAddr, ip netip.Addr) bool {
	m, ok := parseND(frame)
	if !ok || bytes.Equal(m.ethSrc, self) || m.target != ip {
		return false
	}
	switch m.typ {
	case icmpTypeNA:
		return true
	case icmpTypeNS:
		return m.src.IsUnspecified()
	}
	return false
}
