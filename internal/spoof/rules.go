package spoof

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Header offsets of the fields the rules match. Network-header offsets are
// relative to the byte after the Ethernet header, transport-header offsets
// to the byte after the IP header and any IPv6 extension headers.
const (
	offEtherSrc  = 6
	offEtherType = 12

	offARPHeader = 0  // htype, ptype, hlen, plen
	offARPOp     = 6  // operation
	offARPSHA    = 8  // sender hardware address
	offARPSPA    = 14 // sender protocol address
	offARPTHA    = 18 // target hardware address

	offIPv4Src = 12
	offIPv6Src = 8

	offL4Ports  = 0 // UDP source and destination port
	offICMPType = 0
	offNDTarget = 8 // target address of an NS or NA
)

const (
	icmpv6RouterSolicit   = 133
	icmpv6NeighborSolicit = 135
	icmpv6NeighborAdvert  = 136
)

// arpEthernetIPv4 is htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4.
// Requiring it keeps the sender fields at the offsets the rules check.
var arpEthernetIPv4 = []byte{0x00, 0x01, 0x08, 0x00, 6, 4}

// rarpRequestReverse is RARP's operation 3 (RFC 903), the one QEMU's
// announce-self sends after a migration.
var rarpRequestReverse = []byte{0, 3}

// dhcpClientPorts is UDP source port 68, destination port 67.
var dhcpClientPorts = []byte{0, 68, 0, 67}

// offL4DstPort is the UDP destination port.
const offL4DstPort = 2

// Servers' UDP ports: a frame to one of them is a client's request.
const (
	dhcpv4ServerPort = 67
	dhcpv6ServerPort = 547
)

// portRules returns the rules of a port chain in order: an allow-list
// ending in a counted drop (the chain's policy drops too, but a rule's
// counter shows how many frames were refused).
func portRules(p Port) [][]expr.Any {
	var rules [][]expr.Any
	if p.Intercept {
		rules = append(rules, interceptRules()...)
	}
	if p.Open {
		return append(rules, verdict(expr.VerdictAccept))
	}
	mac := []byte(p.MAC)
	v4, v6 := splitIPs(p.IPs)
	rules = append(rules, fastPath(mac, v4, v6)...)
	rules = append(rules, dropForeignMAC(mac))
	if len(v4) == 0 && len(v6) == 0 {
		rules = append(rules, l2OnlyRules(mac)...)
	} else {
		rules = append(rules, arpRules(mac, v4)...)
		rules = append(rules, ipv4Rules(v4)...)
		rules = append(rules, ipv6Rules(append(v6, linkLocal(p.MAC)), p.LearnLinkLocal)...)
	}
	// Last of the allow-list: a migration's announce is rare, the guest's
	// ordinary traffic should not pay for a test it never matches.
	rules = append(rules, rarpAnnounce(mac))
	return append(rules, join(counted(), verdict(expr.VerdictDrop)))
}

// interceptRules drop the requests the node agent answers: anything to a
// DHCPv4 or DHCPv6 server port, and router solicitations. They come first,
// whatever the source, so no request of the guest's reaches the L2 (a
// renewal unicast to another server included), and each has its own
// counter, apart from the spoof drops.
func interceptRules() [][]expr.Any {
	return [][]expr.Any{
		join(etherType(unix.ETH_P_IP), udpDstPort(dhcpv4ServerPort), counted(), verdict(expr.VerdictDrop)),
		join(etherType(unix.ETH_P_IPV6), udpDstPort(dhcpv6ServerPort), counted(), verdict(expr.VerdictDrop)),
		join(etherType(unix.ETH_P_IPV6), icmpv6Type(icmpv6RouterSolicit), counted(), verdict(expr.VerdictDrop)),
	}
}

// udpDstPort matches UDP to a destination port.
func udpDstPort(port uint16) []expr.Any {
	return join(l4proto(unix.IPPROTO_UDP),
		match(expr.PayloadBaseTransportHeader, offL4DstPort, binary.BigEndian.AppendUint16(nil, port)))
}

// fastPath accepts, in one rule per address, the frames a guest sends
// most: IPv4 from its address, and IPv6 other than ICMPv6 from its
// address, both from its MAC. The rules after it would accept them too
// (nothing between the MAC check and the source accepts drops such a
// frame: the neighbour-discovery drops are ICMPv6), so the verdict is the
// same; each frame just skips the MAC rule, the ARP rules and, for IPv6,
// the ND rules. The first address of a family is the likeliest source,
// so a guest with one address of each, the common case, pays one or two
// rules.
func fastPath(mac []byte, v4, v6 []netip.Addr) [][]expr.Any {
	var rules [][]expr.Any
	from := match(expr.PayloadBaseLLHeader, offEtherSrc, mac)
	for _, a := range v4 {
		rules = append(rules, join(ipv4From(a), from, verdict(expr.VerdictAccept)))
	}
	for _, a := range v6 {
		rules = append(rules, join(etherType(unix.ETH_P_IPV6), ipv6Src(a), from,
			[]expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmp(expr.CmpOpNeq, []byte{unix.IPPROTO_ICMPV6})},
			verdict(expr.VerdictAccept)))
	}
	return rules
}

// dropForeignMAC: ether saddr != MAC counter drop.
func dropForeignMAC(mac []byte) []expr.Any {
	return join(
		[]expr.Any{load(expr.PayloadBaseLLHeader, offEtherSrc, 6), cmp(expr.CmpOpNeq, mac)},
		counted(), verdict(expr.VerdictDrop))
}

// rarpAnnounce accepts the frame QEMU sends from the guest MAC once a
// migrated VM runs on its new host, so the switches learn where the MAC
// went: a RARP request-reverse whose sender and target hardware addresses
// are both the guest MAC (its protocol addresses are zero). It claims no
// IP address, so it needs no IP check; a RARP of any other shape or MAC is
// dropped with the other ethertypes.
func rarpAnnounce(mac []byte) []expr.Any {
	return join(
		etherType(unix.ETH_P_RARP),
		match(expr.PayloadBaseNetworkHeader, offARPHeader, arpEthernetIPv4),
		match(expr.PayloadBaseNetworkHeader, offARPOp, rarpRequestReverse),
		match(expr.PayloadBaseNetworkHeader, offARPSHA, mac),
		match(expr.PayloadBaseNetworkHeader, offARPTHA, mac),
		verdict(expr.VerdictAccept))
}

// l2OnlyRules accepts ARP from the guest MAC and any IPv4 or IPv6.
func l2OnlyRules(mac []byte) [][]expr.Any {
	return [][]expr.Any{
		join(arpFrom(mac), verdict(expr.VerdictAccept)),
		join(etherType(unix.ETH_P_IP), verdict(expr.VerdictAccept)),
		join(etherType(unix.ETH_P_IPV6), verdict(expr.VerdictAccept)),
	}
}

// arpRules accepts ARP whose sender is the guest MAC and one guest IPv4.
func arpRules(mac []byte, v4 []netip.Addr) [][]expr.Any {
	var rules [][]expr.Any
	for _, a := range v4 {
		spa := match(expr.PayloadBaseNetworkHeader, offARPSPA, a.AsSlice())
		rules = append(rules, join(arpFrom(mac), spa, verdict(expr.VerdictAccept)))
	}
	return rules
}

// arpFrom matches Ethernet/IPv4 ARP with the given sender MAC.
func arpFrom(mac []byte) []expr.Any {
	return join(
		etherType(unix.ETH_P_ARP),
		match(expr.PayloadBaseNetworkHeader, offARPHeader, arpEthernetIPv4),
		match(expr.PayloadBaseNetworkHeader, offARPSHA, mac))
}

// ipv4Rules accepts the guest's IPv4 sources and a DHCP client without one.
func ipv4Rules(v4 []netip.Addr) [][]expr.Any {
	var rules [][]expr.Any
	for _, a := range v4 {
		rules = append(rules, join(ipv4From(a), verdict(expr.VerdictAccept)))
	}
	dhcp := join(ipv4From(netip.IPv4Unspecified()), l4proto(unix.IPPROTO_UDP),
		match(expr.PayloadBaseTransportHeader, offL4Ports, dhcpClientPorts),
		verdict(expr.VerdictAccept))
	return append(rules, dhcp)
}

// ipv6Rules first drops neighbour discovery that claims an address the guest
// does not own (it would poison neighbour caches or fail another host's DAD
// even when sent from an honest source), then accepts the allowed sources.
// allowed holds the guest's IPv6 addresses and its EUI-64 link-local; a
// learning port also allows what its set of learned link-locals holds.
//
// An NA's target is the address whose link-layer address it announces, so
// it must be the guest's. An ordinary NS's target is the address being
// resolved (the gateway, a peer), so it is left alone; only a DAD NS, sent
// from ::, names the sender's own tentative address. That is also why a
// learning port's DAD NS for a link-local not yet learned is dropped here:
// the node agent reads it on its packet socket before this chain runs, and
// learns it unless another attachment holds it.
func ipv6Rules(allowed []netip.Addr, learn bool) [][]expr.Any {
	allowed = dedup(allowed)
	advert := join(etherType(unix.ETH_P_IPV6), icmpv6Type(icmpv6NeighborAdvert))
	dad := join(etherType(unix.ETH_P_IPV6), ipv6Src(netip.IPv6Unspecified()),
		icmpv6Type(icmpv6NeighborSolicit))
	foreign := targetNotIn(allowed)
	if learn {
		foreign = append(foreign, targetNotLearned()...)
	}
	rules := [][]expr.Any{
		join(advert, foreign, counted(), verdict(expr.VerdictDrop)),
		join(dad, foreign, counted(), verdict(expr.VerdictDrop)),
	}
	for _, a := range allowed {
		rules = append(rules, join(etherType(unix.ETH_P_IPV6), ipv6Src(a), verdict(expr.VerdictAccept)))
	}
	if learn {
		rules = append(rules, join(etherType(unix.ETH_P_IPV6), ipv6SrcLearned(), verdict(expr.VerdictAccept)))
	}
	// :: is what a host without an address yet uses for DAD and MLD.
	unspecified := join(etherType(unix.ETH_P_IPV6), ipv6Src(netip.IPv6Unspecified()),
		l4proto(unix.IPPROTO_ICMPV6), verdict(expr.VerdictAccept))
	return append(rules, unspecified)
}

// targetNotLearned matches an NS or NA whose target is not in the port's
// set of learned link-locals.
func targetNotLearned() []expr.Any {
	return []expr.Any{load(expr.PayloadBaseTransportHeader, offNDTarget, 16),
		&expr.Lookup{SourceRegister: 1, SetName: learnedSet, Invert: true}}
}

// ipv6SrcLearned matches an IPv6 source in the port's set of learned
// link-locals.
func ipv6SrcLearned() []expr.Any {
	return []expr.Any{load(expr.PayloadBaseNetworkHeader, offIPv6Src, 16),
		&expr.Lookup{SourceRegister: 1, SetName: learnedSet}}
}

// icmpv6Type matches an ICMPv6 message type.
func icmpv6Type(t byte) []expr.Any {
	return join(l4proto(unix.IPPROTO_ICMPV6),
		match(expr.PayloadBaseTransportHeader, offICMPType, []byte{t}))
}

// targetNotIn matches an NS or NA whose target is none of allowed: a rule is
// a conjunction, so "not in" is one != per address.
func targetNotIn(allowed []netip.Addr) []expr.Any {
	var exprs []expr.Any
	for _, a := range allowed {
		exprs = append(exprs, load(expr.PayloadBaseTransportHeader, offNDTarget, 16),
			cmp(expr.CmpOpNeq, a.AsSlice()))
	}
	return exprs
}

func ipv4From(a netip.Addr) []expr.Any {
	return join(etherType(unix.ETH_P_IP), match(expr.PayloadBaseNetworkHeader, offIPv4Src, a.AsSlice()))
}

func ipv6Src(a netip.Addr) []expr.Any {
	return match(expr.PayloadBaseNetworkHeader, offIPv6Src, a.AsSlice())
}

// splitIPs sorts and de-duplicates the guest IPs per family, so that the
// same set of addresses always yields the same rules (Verify relies on it).
func splitIPs(ips []netip.Addr) (v4, v6 []netip.Addr) {
	for _, a := range ips {
		if !a.IsValid() {
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

func dedup(addrs []netip.Addr) []netip.Addr {
	addrs = slices.Clone(addrs)
	slices.SortFunc(addrs, netip.Addr.Compare)
	return slices.Compact(addrs)
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
func etherType(t uint16) []expr.Any {
	return match(expr.PayloadBaseLLHeader, offEtherType, binary.BigEndian.AppendUint16(nil, t))
}

// l4proto uses meta l4proto, which the kernel derives after walking IPv6
// extension headers, so a hop-by-hop header cannot hide an ICMPv6 message.
func l4proto(proto byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmp(expr.CmpOpEq, []byte{proto})}
}

func match(base expr.PayloadBase, offset uint32, data []byte) []expr.Any {
	return []expr.Any{load(base, offset, uint32(len(data))), cmp(expr.CmpOpEq, data)}
}

func load(base expr.PayloadBase, offset, length uint32) *expr.Payload {
	return &expr.Payload{DestRegister: 1, Base: base, Offset: offset, Len: length}
}

func cmp(op expr.CmpOp, data []byte) *expr.Cmp {
	return &expr.Cmp{Op: op, Register: 1, Data: slices.Clone(data)}
}

func counted() []expr.Any { return []expr.Any{&expr.Counter{}} }

func verdict(kind expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: kind}} }

func join(parts ...[]expr.Any) []expr.Any {
	return slices.Concat(parts...)
}
