// Package frame reads and writes the few Ethernet frames the node agent
// handles: IPv4 and IPv6 UDP datagrams and ICMPv6 messages, untagged. It
// knows headers only; what a datagram carries (DHCP, neighbour discovery)
// is for the packages that own those protocols.
package frame

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
)

// Ethertypes and IP protocol numbers the agent handles.
const (
	EtherTypeIPv4 = 0x0800
	EtherTypeIPv6 = 0x86dd

	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

const (
	ethLen  = 14
	ipv4Len = 20 // without options
	ipv6Len = 40
	udpLen  = 8
)

// Errors of Parse. They are wrapped by nothing: a caller counts them.
var (
	ErrTruncated   = errors.New("truncated frame")
	ErrUnsupported = errors.New("unsupported frame") // not untagged IPv4/IPv6 UDP or ICMPv6, or an IPv4 fragment
)

// Packet is a parsed frame. Payload aliases the frame's bytes.
type Packet struct {
	Src, Dst net.HardwareAddr
	IPSrc    netip.Addr
	IPDst    netip.Addr
	Proto    uint8  // ProtoUDP or ProtoICMPv6
	HopLimit uint8  // IPv6 only (neighbour discovery requires 255)
	SrcPort  uint16 // UDP only
	DstPort  uint16 // UDP only
	Payload  []byte // the UDP payload, or the whole ICMPv6 message
}

// Parse reads an Ethernet frame carrying IPv4 UDP, IPv6 UDP or ICMPv6
// directly after the IPv6 header (no extension headers: router
// solicitations and DHCPv6 carry none). Lengths are taken from the IP and
// UDP headers, so Ethernet padding is not part of Payload; a header that
// claims more than the frame holds is ErrTruncated. Checksums are not
// verified: the frame comes from a veth, which has none to get wrong.
func Parse(b []byte) (Packet, error) {
	if len(b) < ethLen {
		return Packet{}, ErrTruncated
	}
	p := Packet{Dst: net.HardwareAddr(b[0:6]), Src: net.HardwareAddr(b[6:12])}
	switch binary.BigEndian.Uint16(b[12:14]) {
	case EtherTypeIPv4:
		return parseIPv4(p, b[ethLen:])
	case EtherTypeIPv6:
		return parseIPv6(p, b[ethLen:])
	}
	return Packet{}, ErrUnsupported
}

func parseIPv4(p Packet, b []byte) (Packet, error) {
	if len(b) < ipv4Len {
		return Packet{}, ErrTruncated
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	switch {
	case b[0]>>4 != 4 || ihl < ipv4Len:
		return Packet{}, ErrUnsupported
	case total < ihl || total > len(b):
		return Packet{}, ErrTruncated
	case binary.BigEndian.Uint16(b[6:8])&0x3fff != 0: // MF or an offset: a fragment
		return Packet{}, ErrUnsupported
	case b[9] != ProtoUDP:
		return Packet{}, ErrUnsupported
	}
	p.IPSrc = netip.AddrFrom4([4]byte(b[12:16]))
	p.IPDst = netip.AddrFrom4([4]byte(b[16:20]))
	p.Proto = ProtoUDP
	return parseUDP(p, b[ihl:total])
}

func parseIPv6(p Packet, b []byte) (Packet, error) {
	if len(b) < ipv6Len {
		return Packet{}, ErrTruncated
	}
	if b[0]>>4 != 6 {
		return Packet{}, ErrUnsupported
	}
	n := int(binary.BigEndian.Uint16(b[4:6]))
	if ipv6Len+n > len(b) {
		return Packet{}, ErrTruncated
	}
	p.IPSrc = netip.AddrFrom16([16]byte(b[8:24]))
	p.IPDst = netip.AddrFrom16([16]byte(b[24:40]))
	p.Proto = b[6]
	p.HopLimit = b[7]
	body := b[ipv6Len : ipv6Len+n]
	switch p.Proto {
	case ProtoUDP:
		return parseUDP(p, body)
	case ProtoICMPv6:
		if len(body) < 4 {
			return Packet{}, ErrTruncated
		}
		p.Payload = body
		return p, nil
	}
	return Packet{}, ErrUnsupported
}

func parseUDP(p Packet, b []byte) (Packet, error) {
	if len(b) < udpLen {
		return Packet{}, ErrTruncated
	}
	n := int(binary.BigEndian.Uint16(b[4:6]))
	if n < udpLen || n > len(b) {
		return Packet{}, ErrTruncated
	}
	p.SrcPort = binary.BigEndian.Uint16(b[0:2])
	p.DstPort = binary.BigEndian.Uint16(b[2:4])
	p.Payload = b[udpLen:n]
	return p, nil
}
