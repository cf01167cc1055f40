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

// ARPRequest asks who has dstIP, broadcast.
func ARPRequest(srcMAC net.HardwareAddr, srcIP, dstIP net.IP) []byte {
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	return arp(1, srcMAC, srcIP, make(net.HardwareAddr, 6), dstIP, bcast)
}

func arp(op uint16, sha net.HardwareAddr, spa net.IP, tha net.HardwareAddr, tpa net.IP, ethDst net.HardwareAddr) []byte {
	b := ethernet(ethDst, sha, 0x0806)
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

// UDP4 is an IPv4/UDP frame carrying payload.
func UDP4(srcMAC, dstMAC net.HardwareAddr, src, dst net.IP, sport, dport uint16, payload []byte) []byte {
	udp := binary.BigEndian.AppendUint16(nil, sport)
	udp = binary.BigEndian.AppendUint16(udp, dport)
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(udp, 0, 0) // checksum optional over IPv4
	udp = append(udp, payload...)
	ip := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	ip = append(append(ip, src.To4()...), dst.To4()...)
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	return append(append(ethernet(dstMAC, srcMAC, 0x0800), ip...), udp...)
}

func checksum(b []byte) uint16 {
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
