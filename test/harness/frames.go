package harness

import (
	"encoding/binary"
	"net"
)

// Ethernet frames for data-path tests, built by hand so tests depend on
// nothing but the kernel.

// ARPReply is an ARP reply from (srcMAC, srcIP) to (dstMAC, dstIP).
func ARPReply(srcMAC net.HardwareAddr, srcIP net.IP, dstMAC net.HardwareAddr, dstIP net.IP) []byte {
	return arp(2, srcMAC, srcIP, dstMAC, dstIP, dstMAC)
}

// Broadcast is the Ethernet broadcast address.
var Broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// ARPRequest asks who has dstIP, broadcast.
func ARPRequest(srcMAC net.HardwareAddr, srcIP, dstIP net.IP) []byte {
	return ARPRequestAs(srcMAC, srcMAC, srcIP, dstIP)
}

// ARPRequestAs is an ARP request whose sender hardware address (sha) may
// differ from the Ethernet source (ethSrc), as a forged one would.
func ARPRequestAs(ethSrc, sha net.HardwareAddr, spa, tpa net.IP) []byte {
	return arpFrom(ethSrc, 1, sha, spa, make(net.HardwareAddr, 6), tpa, Broadcast)
}

func arp(op uint16, sha net.HardwareAddr, spa net.IP, tha net.HardwareAddr, tpa net.IP, ethDst net.HardwareAddr) []byte {
	return arpFrom(sha, op, sha, spa, tha, tpa, ethDst)
}

func arpFrom(ethSrc net.HardwareAddr, op uint16, sha net.HardwareAddr, spa net.IP, tha net.HardwareAddr, tpa net.IP, ethDst net.HardwareAddr) []byte {
	b := ethernet(ethDst, ethSrc, 0x0806)
	b = binary.BigEndian.AppendUint16(b, 1)      // Ethernet
	b = binary.BigEndian.AppendUint16(b, 0x0800) // IPv4
	b = append(b, 6, 4)
	b = binary.BigEndian.AppendUint16(b, op)
	b = append(b, sha...)
	b = append(b, spa.To4()...)
	b = append(b, tha...)
	return append(b, tpa.To4()...)
}

func ethernet(dst, src net.HardwareAddr, etherType uint16) []byte {
	b := append(append([]byte{}, dst...), src...)
	return binary.BigEndian.AppendUint16(b, etherType)
}

func udp(sport, dport uint16, payload []byte) []byte {
	u := binary.BigEndian.AppendUint16(nil, sport)
	u = binary.BigEndian.AppendUint16(u, dport)
	u = binary.BigEndian.AppendUint16(u, uint16(8+len(payload)))
	return append(append(u, 0, 0), payload...) // checksum: optional over IPv4, set by UDP6
}

// UDP4 is an IPv4/UDP frame carrying payload.
func UDP4(srcMAC, dstMAC net.HardwareAddr, src, dst net.IP, sport, dport uint16, payload []byte) []byte {
	udp := udp(sport, dport, payload)
	ip := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	ip = append(append(ip, src.To4()...), dst.To4()...)
	binary.BigEndian.PutUint16(ip[10:], Checksum(ip))
	return append(append(ethernet(dstMAC, srcMAC, 0x0800), ip...), udp...)
}

// UDP6 is an IPv6/UDP frame carrying payload (UDP checksum set: IPv6
// requires it).
func UDP6(srcMAC, dstMAC net.HardwareAddr, src, dst net.IP, sport, dport uint16, payload []byte) []byte {
	u := udp(sport, dport, payload)
	pseudo := append(append(append([]byte{}, src.To16()...), dst.To16()...), 0, 0, byte(len(u)>>8), byte(len(u)), 0, 0, 0, 17)
	binary.BigEndian.PutUint16(u[6:], Checksum(append(pseudo, u...)))
	ip := []byte{0x60, 0, 0, 0, 0, 0, 17, 64}
	binary.BigEndian.PutUint16(ip[4:], uint16(len(u)))
	ip = append(append(ip, src.To16()...), dst.To16()...)
	return append(append(ethernet(dstMAC, srcMAC, 0x86dd), ip...), u...)
}

// LinkLocal is the EUI-64 IPv6 link-local address of mac.
func LinkLocal(mac net.HardwareAddr) net.IP {
	ip := net.ParseIP("fe80::")
	copy(ip[8:], []byte{mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
	return ip
}

// Checksum is the Internet checksum (RFC 1071).
func Checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
