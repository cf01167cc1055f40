package spoof

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"

	"github.com/tapbridge/tapbridge-cni/pkg/nft"
	"golang.org/x/sys/unix"
)

// Header offsets of the fields the rules match. Network-header offsets are
// relative to the byte after the Ethernet header, transport-header offsets
// to the byte after the IP header and any IPv6 extension headers.
const (
	offEtherSrc  = 6
	offEtherType = 12

	offARPHeader = 0  // htype, ptype, hlen, plen
	offARPSHA    = 8  // sender hardware address
	offARPSPA    = 14 // sender protocol address

	offIPv4Src = 12
	offIPv6Src = 8

	offL4Ports  = 0 // UDP source and destination port
	offICMPType = 0
	offNDTarget = 8 // target address of an NS or NA
)

const (
	icmpv6NeighborSolicit = 135
	icmpv6NeighborAdvert  = 136
)

// arpEthernetIPv4 is htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4.
// Requiring it keeps the sender fields at the offsets the rules check.
var arpEthernetIPv4 = []byte{0x00, 0x01, 0x08, 0x00, 6, 4}

// dhcpClientPorts is UDP source port 68, destination port 67.
var dhcpClientPorts = []byte{0, 68, 0, 67}

// portRules returns the rules of a port chain in order: an allow-list
// ending in a counted drop (the chain's policy drops too, but a rule's
// counter shows how many frames were refused).
func portRules(p Port) [][]nft.Expr {
	mac := []byte(p.MAC)
	rules := [][]nft.Expr{dropForeignMAC(mac)}
	v4, v6 := splitIPs(p.IPs)
	if len(v4) == 0 && len(v6) == 0 {
		rules = append(rules, l2OnlyRules(mac)...)
	} else {
		rules = append(rules, arpRules(mac, v4)...)
		rules = append(rules, ipv4Rules(v4)...)
		rules = append(rules, ipv6Rules(append(v6, linkLocal(p.MAC)))...)
	}
	return append(rules, join(counted(), verdict(nft.Drop)))
}

// dropForeignMAC: ether saddr != MAC counter drop.
func dropForeignMAC(mac []byte) []nft.Expr {
	return join(
		[]nft.Expr{load(nft.LinkLayer, offEtherSrc, 6), cmp(nft.Neq, mac)},
		counted(), verdict(nft.Drop))
}

// l2OnlyRules accepts ARP from the guest MAC and any IPv4 or IPv6.
func l2OnlyRules(mac []byte) [][]nft.Expr {
	return [][]nft.Expr{
		join(arpFrom(mac), verdict(nft.Accept)),
		join(etherType(unix.ETH_P_IP), verdict(nft.Accept)),
		join(etherType(unix.ETH_P_IPV6), verdict(nft.Accept)),
	}
}

// arpRules accepts ARP whose sender is the guest MAC and one guest IPv4.
func arpRules(mac []byte, v4 []netip.Addr) [][]nft.Expr {
	var rules [][]nft.Expr
	for _, a := range v4 {
		spa := match(nft.Network, offARPSPA, a.AsSlice())
		rules = append(rules, join(arpFrom(mac), spa, verdict(nft.Accept)))
	}
	return rules
}

// arpFrom matches Ethernet/IPv4 ARP with the given sender MAC.
func arpFrom(mac []byte) []nft.Expr {
	return join(
		etherType(unix.ETH_P_ARP),
		match(nft.Network, offARPHeader, arpEthernetIPv4),
		match(nft.Network, offARPSHA, mac))
}

// ipv4Rules accepts the guest's IPv4 sources and a DHCP client without one.
func ipv4Rules(v4 []netip.Addr) [][]nft.Expr {
	var rules [][]nft.Expr
	for _, a := range v4 {
		rules = append(rules, join(ipv4From(a), verdict(nft.Accept)))
	}
	dhcp := join(ipv4From(netip.IPv4Unspecified()), l4proto(unix.IPPROTO_UDP),
		match(nft.Transport, offL4Ports, dhcpClientPorts),
		verdict(nft.Accept))
	return append(rules, dhcp)
}

// ipv6Rules first drops neighbour discovery that claims an address the guest
// does not own (it would poison neighbour caches or fail another host's DAD
// even when sent from an honest source), then accepts the allowed sources.
// allowed holds the guest's IPv6 addresses and its EUI-64 link-local.
//
// An NA's target is the address whose link-layer address it announces, so
// it must be the guest's. An ordinary NS's target is the address being
// resolved (the gateway, a peer), so it is left alone; only a DAD NS, sent
// from ::, names the sender's own tentative address.
func ipv6Rules(allowed []netip.Addr) [][]nft.Expr {
	allowed = dedup(allowed)
	advert := join(etherType(unix.ETH_P_IPV6), icmpv6Type(icmpv6NeighborAdvert))
	dad := join(etherType(unix.ETH_P_IPV6), ipv6Src(netip.IPv6Unspecified()),
		icmpv6Type(icmpv6NeighborSolicit))
	rules := [][]nft.Expr{
		join(advert, targetNotIn(allowed), counted(), verdict(nft.Drop)),
		join(dad, targetNotIn(allowed), counted(), verdict(nft.Drop)),
	}
	for _, a := range allowed {
		rules = append(rules, join(etherType(unix.ETH_P_IPV6), ipv6Src(a), verdict(nft.Accept)))
	}
	// :: is what a host without an address yet uses for DAD and MLD.
	unspecified := join(etherType(unix.ETH_P_IPV6), ipv6Src(netip.IPv6Unspecified()),
		l4proto(unix.IPPROTO_ICMPV6), verdict(nft.Accept))
	return append(rules, unspecified)
}

// icmpv6Type matches an ICMPv6 message type.
func icmpv6Type(t byte) []nft.Expr {
	return join(l4proto(unix.IPPROTO_ICMPV6),
		match(nft.Transport, offICMPType, []byte{t}))
}

// targetNotIn matches an NS or NA whose target is none of allowed: a rule is
// a conjunction, so "not in" is one != per address.
func targetNotIn(allowed []netip.Addr) []nft.Expr {
	var exprs []nft.Expr
	for _, a := range allowed {
		exprs = append(exprs, load(nft.Transport, offNDTarget, 16),
			cmp(nft.Neq, a.AsSlice()))
	}
	return exprs
}

func ipv4From(a netip.Addr) []nft.Expr {
	return join(etherType(unix.ETH_P_IP), match(nft.Network, offIPv4Src, a.AsSlice()))
}

func ipv6Src(a netip.Addr) []nft.Expr {
	return match(nft.Network, offIPv6Src, a.AsSlice())
}

// splitIPs sorts and de-duplicates the guest IPs per family, so that the
// same set of addresses always yields the same rules (Verify relies on it).
func splitIPs(ips []net.IP) (v4, v6 []netip.Addr) {
	for _, ip := range ips {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue // rejected by validate
		}
		if a = a.Unmap(); a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	return dedup(v4), dedup(v6)
}

// dedup returns the addresses sorted, without repeats. A port has a few
// addresses, so it inserts them in order one by one: a generic sort
// (slices.SortFunc) instantiated for netip.Addr is 8 KiB of code that
// every exec of the plugin would map.
func dedup(addrs []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		i := 0
		for i < len(out) && out[i].Less(a) {
			i++
		}
		if i == len(out) || out[i] != a {
			out = slices.Insert(out, i, a)
		}
	}
	return out
}

// linkLocal derives fe80::/64 plus the modified EUI-64 interface identifier
// (RFC 4291 appendix A): the MAC with ff:fe inserted and the U/L bit flipped.
func linkLocal(mac net.HardwareAddr) netip.Addr {
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	a[8], a[9], a[10] = mac[0]^0x02, mac[1], mac[2]
	a[11], a[12] = 0xff, 0xfe
	a[13], a[14], a[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(a)
}

// etherType reads the ethertype from the frame itself rather than using meta
// protocol: for a VLAN-tagged frame whose tag the kernel moved into skb
// metadata, the payload expression still reads 0x8100 (nftables rebuilds the
// tag), while meta protocol would report the inner protocol.
func etherType(t uint16) []nft.Expr {
	return match(nft.LinkLayer, offEtherType, binary.BigEndian.AppendUint16(nil, t))
}

// l4proto uses meta l4proto, which the kernel derives after walking IPv6
// extension headers, so a hop-by-hop header cannot hide an ICMPv6 message.
func l4proto(proto byte) []nft.Expr {
	return []nft.Expr{nft.Meta{Key: nft.L4Proto}, cmp(nft.Eq, []byte{proto})}
}

func match(base nft.PayloadBase, offset uint32, data []byte) []nft.Expr {
	return []nft.Expr{load(base, offset, uint32(len(data))), cmp(nft.Eq, data)}
}

func load(base nft.PayloadBase, offset, length uint32) nft.Payload {
	return nft.Payload{Base: base, Offset: offset, Len: length}
}

func cmp(op nft.CmpOp, data []byte) nft.Cmp { return nft.Cmp{Op: op, Data: string(data)} }

func counted() []nft.Expr { return []nft.Expr{nft.Counter{}} }

func verdict(v nft.Verdict) []nft.Expr { return []nft.Expr{v} }

func join(parts ...[]nft.Expr) []nft.Expr {
	return slices.Concat(parts...)
}
