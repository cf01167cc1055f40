package spoof

import (
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// A probe is one frame the "VM" sends. honest frames must arrive, the others
// must be dropped. build makes the frame for an Ethernet destination and
// embeds marker, by which the receiver recognises it.
type probe struct {
	name   string
	honest bool
	build  func(dst net.HardwareAddr, marker []byte) []byte
}

// Addresses of the data-path test (RFC 5737 / RFC 3849 documentation ranges).
var (
	guest4   = netip.MustParseAddr("192.0.2.10")
	host4    = netip.MustParseAddr("192.0.2.1") // on br0
	forged4  = netip.MustParseAddr("192.0.2.99")
	guest6   = netip.MustParseAddr("2001:db8::10")
	gateway6 = netip.MustParseAddr("2001:db8::1")
	forged6  = netip.MustParseAddr("2001:db8::99")
	allNodes = netip.MustParseAddr("ff02::1")
	zero4    = netip.IPv4Unspecified()
	zero6    = netip.IPv6Unspecified()
	bcast4   = netip.MustParseAddr("255.255.255.255")

	foreignMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
)

// guestProbes are the frames for a guest with MAC gm, IPs guest4 and guest6.
func guestProbes(gm net.HardwareAddr) []probe {
	return append(honestProbes(gm), forgedProbes(gm)...)
}

func honestProbes(gm net.HardwareAddr) []probe {
	ll := linkLocal(gm)
	v4 := func(src, dst netip.Addr, sport, dport uint16) func(net.HardwareAddr, []byte) []byte {
		return func(d net.HardwareAddr, m []byte) []byte {
			return ether(d, gm, unix.ETH_P_IP, ipv4(src, dst, unix.IPPROTO_UDP, udp4(sport, dport, m)))
		}
	}
	return []probe{
		{"IPv4 UDP from guest IP", true, v4(guest4, host4, 40000, 9)},
		{"DHCP discover from 0.0.0.0", true, v4(zero4, bcast4, 68, 67)},
		{"ARP request from guest", true, arpFrame(gm, gm, guest4, host4, nil)},
		{"IPv6 UDP from guest IP", true, udp6Frame(gm, guest6, gateway6)},
		{"IPv6 UDP from EUI-64 link-local", true, udp6Frame(gm, ll, allNodes)},
		{"NS resolving the gateway", true, ndFrame(gm, guest6, icmpv6NeighborSolicit, gateway6, nil)},
		{"NS with target = guest IP", true, ndFrame(gm, guest6, icmpv6NeighborSolicit, guest6, nil)},
		{"DAD NS from :: for guest IP", true, ndFrame(gm, zero6, icmpv6NeighborSolicit, guest6, nil)},
		{"NA for guest IP", true, ndFrame(gm, guest6, icmpv6NeighborAdvert, guest6, nil)},
		{"NA for link-local from link-local", true, ndFrame(gm, ll, icmpv6NeighborAdvert, ll, nil)},
		{"RARP announce (QEMU after migration)", true, rarpFrame(gm, 3, gm, gm)},
		{"gratuitous ARP request", true, arpFrame(gm, gm, guest4, guest4, nil)},
		{"gratuitous ARP reply", true, arpOpFrame(gm, 2, guest4, guest4)},
		{"unsolicited NA for guest IP to all nodes", true, ndFrame(gm, guest6, icmpv6NeighborAdvert, guest6, nil)},
	}
}

// rarpFrame: RARP from gm's Ethernet source with the given operation and
// hardware addresses.
func rarpFrame(gm net.HardwareAddr, op uint16, sha, tha net.HardwareAddr) func(net.HardwareAddr, []byte) []byte {
	return func(d net.HardwareAddr, m []byte) []byte { return ether(d, gm, unix.ETH_P_RARP, rarp(op, sha, tha, m)) }
}

func arpOpFrame(gm net.HardwareAddr, op uint16, spa, tpa netip.Addr) func(net.HardwareAddr, []byte) []byte {
	return func(d net.HardwareAddr, m []byte) []byte {
		return ether(d, gm, unix.ETH_P_ARP, arp(op, gm, spa, tpa, m))
	}
}

func forgedProbes(gm net.HardwareAddr) []probe {
	udp := func(src net.HardwareAddr, from netip.Addr, sport, dport uint16) func(net.HardwareAddr, []byte) []byte {
		return func(d net.HardwareAddr, m []byte) []byte {
			return ether(d, src, unix.ETH_P_IP, ipv4(from, host4, unix.IPPROTO_UDP, udp4(sport, dport, m)))
		}
	}
	badHType := func(b []byte) []byte { b[14+1] = 6; return b } // IEEE 802 hardware type
	return []probe{
		{"forged source MAC", false, udp(foreignMAC, guest4, 40000, 9)},
		{"forged source MAC, IPv6 from the guest IP", false, func(d net.HardwareAddr, m []byte) []byte {
			return ether(d, foreignMAC, unix.ETH_P_IPV6, udp6(guest6, gateway6, 40000, 9, m))
		}},
		{"forged IPv4 source", false, udp(gm, forged4, 40000, 9)},
		{"IPv4 from 0.0.0.0 that is not DHCP", false, udp(gm, zero4, 5000, 5000)},
		{"ARP with forged sender IP", false, arpFrame(gm, gm, forged4, host4, nil)},
		{"ARP with forged sender MAC", false, arpFrame(gm, foreignMAC, guest4, host4, nil)},
		{"ARP probe from 0.0.0.0 (policy)", false, arpFrame(gm, gm, zero4, guest4, nil)},
		{"ARP that is not Ethernet/IPv4", false, arpFrame(gm, gm, guest4, host4, badHType)},
		{"forged IPv6 source", false, udp6Frame(gm, forged6, gateway6)},
		{"IPv6 UDP from ::", false, udp6Frame(gm, zero6, gateway6)},
		{"NA with forged target", false, ndFrame(gm, guest6, icmpv6NeighborAdvert, forged6, nil)},
		{"NA with forged target behind hop-by-hop", false,
			ndFrame(gm, guest6, icmpv6NeighborAdvert, forged6, hopByHopWrap)},
		{"DAD NS for a foreign address", false, ndFrame(gm, zero6, icmpv6NeighborSolicit, forged6, nil)},
		{"LLDP ethertype 0x88cc", false, rawFrame(gm, unix.ETH_P_LLDP, nil)},
		{"802.1Q tagged IPv4", false, taggedFrame(gm, unix.ETH_P_8021Q)},
		{"802.1ad tagged IPv4", false, taggedFrame(gm, unix.ETH_P_8021AD)},
		{"802.3/LLC frame (STP BPDU)", false, rawFrame(gm, 0, []byte{0x42, 0x42, 0x03, 0, 0, 0})},
		{"RARP with a foreign sender MAC", false, rarpFrame(gm, 3, foreignMAC, gm)},
		{"RARP with a foreign target MAC", false, rarpFrame(gm, 3, gm, foreignMAC)},
		{"RARP reply-reverse", false, rarpFrame(gm, 4, gm, gm)},
		{"RARP from a foreign source MAC", false, func(d net.HardwareAddr, m []byte) []byte {
			return ether(d, foreignMAC, unix.ETH_P_RARP, rarp(3, foreignMAC, foreignMAC, m))
		}},
	}
}

// l2OnlyProbes are the frames for a guest with MAC gm and no IPs.
func l2OnlyProbes(gm net.HardwareAddr) []probe {
	return []probe{
		{"IPv4 from any address", true, func(d net.HardwareAddr, m []byte) []byte {
			return ether(d, gm, unix.ETH_P_IP, ipv4(forged4, host4, unix.IPPROTO_UDP, udp4(1, 9, m)))
		}},
		{"ARP from any address", true, arpFrame(gm, gm, forged4, host4, nil)},
		{"RARP announce", true, rarpFrame(gm, 3, gm, gm)},
		{"RARP with a foreign sender MAC", false, rarpFrame(gm, 3, foreignMAC, gm)},
		{"IPv6 from any address", true, udp6Frame(gm, forged6, gateway6)},
		{"forged source MAC", false, arpFrame(foreignMAC, foreignMAC, forged4, host4, nil)},
		{"ARP with forged sender MAC", false, arpFrame(gm, foreignMAC, forged4, host4, nil)},
		{"LLDP ethertype 0x88cc", false, rawFrame(gm, unix.ETH_P_LLDP, nil)},
		{"802.1Q tagged IPv4", false, taggedFrame(gm, unix.ETH_P_8021Q)},
	}
}

func arpFrame(src, sha net.HardwareAddr, spa, tpa netip.Addr, edit func([]byte) []byte) func(net.HardwareAddr, []byte) []byte {
	return func(d net.HardwareAddr, m []byte) []byte {
		b := ether(d, src, unix.ETH_P_ARP, arp(1, sha, spa, tpa, m))
		if edit != nil {
			b = edit(b)
		}
		return b
	}
}

func udp6Frame(gm net.HardwareAddr, src, dst netip.Addr) func(net.HardwareAddr, []byte) []byte {
	return func(d net.HardwareAddr, m []byte) []byte {
		return ether(d, gm, unix.ETH_P_IPV6, udp6(src, dst, 40000, 9, m))
	}
}

// ndFrame sends an NS to the target's solicited-node group or an NA to all
// nodes; wrap, if set, inserts extension headers before the ICMPv6 message.
func ndFrame(gm net.HardwareAddr, src netip.Addr, typ byte, target netip.Addr,
	wrap func([]byte) (byte, []byte)) func(net.HardwareAddr, []byte) []byte {
	dst := allNodes
	if typ == icmpv6NeighborSolicit {
		dst = solicitedNode(target)
	}
	return func(d net.HardwareAddr, m []byte) []byte {
		var next byte = unix.IPPROTO_ICMPV6
		payload := nd(src, dst, typ, target, m)
		if wrap != nil {
			next, payload = wrap(payload)
		}
		return ether(d, gm, unix.ETH_P_IPV6, ipv6(src, dst, next, payload))
	}
}

func hopByHopWrap(icmp []byte) (byte, []byte) {
	return unix.IPPROTO_HOPOPTS, hopByHop(unix.IPPROTO_ICMPV6, icmp)
}

// rawFrame sends an arbitrary ethertype; 0 means an 802.3 length field.
func rawFrame(gm net.HardwareAddr, etype uint16, body []byte) func(net.HardwareAddr, []byte) []byte {
	return func(d net.HardwareAddr, m []byte) []byte {
		payload := append(append([]byte{}, body...), m...)
		if etype == 0 {
			return ether(d, gm, uint16(len(payload)), payload)
		}
		return ether(d, gm, etype, payload)
	}
}

// taggedFrame is an honest IPv4 packet inside a VLAN tag: a guest may not
// reach other VLANs, whatever the inner packet.
func taggedFrame(gm net.HardwareAddr, tpid uint16) func(net.HardwareAddr, []byte) []byte {
	return func(d net.HardwareAddr, m []byte) []byte {
		inner := ipv4(guest4, host4, unix.IPPROTO_UDP, udp4(40000, 9, m))
		etype, payload := tagged(tpid, unix.ETH_P_IP, inner)
		return ether(d, gm, etype, payload)
	}
}
