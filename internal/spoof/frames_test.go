package spoof

import (
	"encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// Builders of raw Ethernet frames for the data-path test. Checksums are
// filled in so that the frames are what a real guest would send, although
// the filter itself never looks at them.

func ether(dst, src net.HardwareAddr, etype uint16, payload []byte) []byte {
	b := append(append([]byte{}, dst...), src...)
	b = binary.BigEndian.AppendUint16(b, etype)
	return append(b, payload...)
}

// tagged wraps payload in an 802.1Q or 802.1ad tag (tpid) of VLAN 100.
func tagged(tpid, inner uint16, payload []byte) (uint16, []byte) {
	b := binary.BigEndian.AppendUint16(nil, 100)
	b = binary.BigEndian.AppendUint16(b, inner)
	return tpid, append(b, payload...)
}

func arp(op uint16, sha net.HardwareAddr, spa, tpa netip.Addr, trailer []byte) []byte {
	b := []byte{0x00, 0x01, 0x08, 0x00, 6, 4}
	b = binary.BigEndian.AppendUint16(b, op)
	b = append(b, sha...)
	b = append(b, spa.AsSlice()...)
	b = append(b, make([]byte, 6)...) // target MAC unknown
	b = append(b, tpa.AsSlice()...)
	return append(b, trailer...) // Ethernet padding carries the marker
}

// rarp is a RARP message as QEMU's announce-self builds it: protocol
// addresses zero, then the marker in the padding.
func rarp(op uint16, sha, tha net.HardwareAddr, trailer []byte) []byte {
	b := []byte{0x00, 0x01, 0x08, 0x00, 6, 4}
	b = binary.BigEndian.AppendUint16(b, op)
	b = append(b, sha...)
	b = append(b, 0, 0, 0, 0)
	b = append(b, tha...)
	b = append(b, 0, 0, 0, 0)
	return append(b, trailer...)
}

func ipv4(src, dst netip.Addr, proto byte, payload []byte) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	h[8], h[9] = 64, proto
	copy(h[12:], src.AsSlice())
	copy(h[16:], dst.AsSlice())
	binary.BigEndian.PutUint16(h[10:], harness.Checksum(h))
	return append(h, payload...)
}

// udp4 leaves the checksum 0, which IPv4 allows.
func udp4(sport, dport uint16, payload []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, sport)
	b = binary.BigEndian.AppendUint16(b, dport)
	b = binary.BigEndian.AppendUint16(b, uint16(8+len(payload)))
	b = append(b, 0, 0)
	return append(b, payload...)
}

func ipv6(src, dst netip.Addr, next byte, payload []byte) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6], h[7] = next, 255 // hop limit 255, as neighbour discovery needs
	copy(h[8:], src.AsSlice())
	copy(h[24:], dst.AsSlice())
	return append(h, payload...)
}

// hopByHop puts an empty hop-by-hop options header (PadN) before payload.
func hopByHop(next byte, payload []byte) []byte {
	return append([]byte{next, 0, 1, 4, 0, 0, 0, 0}, payload...)
}

func udp6(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	b := udp4(sport, dport, payload)
	binary.BigEndian.PutUint16(b[6:], checksum6(src, dst, unix.IPPROTO_UDP, b))
	return ipv6(src, dst, unix.IPPROTO_UDP, b)
}

// nd builds an NS or NA (type 135/136) for target, carrying marker after
// the fixed part where options would go.
func nd(src, dst netip.Addr, typ byte, target netip.Addr, marker []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0, 0, 0, 0}
	if typ == icmpv6NeighborAdvert {
		b[4] = 0x20 // the override flag, as an unsolicited NA sets it
	}
	b = append(b, target.AsSlice()...)
	b = append(b, marker...)
	binary.BigEndian.PutUint16(b[2:], checksum6(src, dst, unix.IPPROTO_ICMPV6, b))
	return b
}

func checksum6(src, dst netip.Addr, proto byte, l4 []byte) uint16 {
	pseudo := append(src.AsSlice(), dst.AsSlice()...)
	pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(l4)))
	pseudo = append(pseudo, 0, 0, 0, proto)
	return harness.Checksum(append(pseudo, l4...))
}

// solicitedNode is the solicited-node multicast group of a.
func solicitedNode(a netip.Addr) netip.Addr {
	b := a.As16()
	g := netip.MustParseAddr("ff02::1:ff00:0").As16()
	copy(g[13:], b[13:])
	return netip.AddrFrom16(g)
}
