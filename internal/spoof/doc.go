// Package spoof installs anti-spoofing rules on the host bridge port of a VM
// attachment, so that an untrusted guest can only send frames as itself.
//
// # Layout
//
// Each port has its own table of the netdev family in the node's network
// namespace (the calling thread's current one), with one base chain hooked
// on the ingress of the port's device, the host end of the VM's veth:
//
//	table netdev tapbridge-<port> {
//		set ll { type ipv6_addr; }	# a learning port's only
//		chain guest {
//			type filter hook ingress device "<port>" priority filter; policy drop;
//			... the allow-list below, ending in counter drop ...
//		}
//	}
//
// Ingress of the port sees every frame the guest sends, before the bridge
// decides whether to forward it or hand it to the host, so one chain
// protects the other ports, the uplink and the node itself; and it sees
// nothing else, so frames of the uplink and of other ports pay nothing.
// Tables of different ports share no object: adding or removing a port is
// one transaction on its own table, whatever the number of ports.
//
// # What a port's chain lets through
//
// Everything not listed here is dropped (and counted):
//
//   - Ethernet source must be the guest MAC; checked first.
//   - RARP request-reverse (operation 3, Ethernet/IPv4) whose sender and
//     target hardware addresses are the guest MAC: QEMU's announce-self
//     after a live migration, which tells the switches the MAC moved.
//   - ARP for Ethernet/IPv4 only (htype 1, ptype 0x0800, hlen 6, plen 4)
//     whose sender MAC is the guest MAC and whose sender IP is one of the
//     guest's IPv4 addresses. ARP probes (sender IP 0.0.0.0, RFC 5227) are
//     dropped: the guest then sees no conflict and carries on.
//   - IPv4 whose source is one of the guest's IPv4 addresses, or 0.0.0.0
//     for a DHCP client only (UDP 68 to 67).
//   - IPv6 whose source is one of the guest's IPv6 addresses or the link-local
//     address derived from the guest MAC by modified EUI-64 (fe80::/64), or
//     :: for ICMPv6 only (DAD neighbour solicitations, MLD reports, RS).
//   - Neighbour advertisements, and neighbour solicitations sent from ::
//     (DAD), additionally need a target that is one of the guest's IPv6
//     addresses or that link-local address. An ordinary solicitation's target
//     is the address being resolved (the gateway, a peer), so it is not
//     restricted: doing so would break the guest's neighbour resolution.
//   - On a learning port (LearnLinkLocal), the link-local in the table's set
//     ll counts as the EUI-64 one does: an allowed source, NA target and
//     DAD target. The node agent fills the set (Learn) from the guest's DAD
//     neighbour solicitation, which this chain drops while the address is
//     not in it: the agent's packet socket sees the frame first, so the
//     claim reaches the agent and nothing else. The set holds one address
//     (a new claim replaces the old one); Ensure creates it if missing and
//     never empties it, Verify checks it exists and is read by the rules,
//     never what it holds, and it goes with the table.
//   - Nothing else: every other ethertype is dropped, including 802.1Q and
//     802.1ad tagged frames (the guest gets no VLAN trunk), LLDP, 802.3/LLC
//     frames such as STP BPDUs, MPLS and PPPoE.
//
// A port whose guest the node agent serves (Intercept) first drops, each
// rule with its own counter, every IPv4 or IPv6 UDP frame to a DHCP server
// port (67, 547) and every router solicitation, whatever their source: the
// agent reads the port's frames on a packet socket, which the kernel feeds
// before the ingress hook, and answers them, so no other DHCP server on the
// L2 sees or answers a served guest. An Open port (spoofCheck off) keeps
// only those rules and accepts everything else.
//
// An attachment without IPs (L2-only) gets only the MAC checks: the Ethernet
// source and, for ARP, the sender MAC must be the guest MAC; ARP, IPv4 and
// IPv6 are then accepted with any address, other ethertypes are dropped.
//
// # Limits
//
//   - The intercept rules see untagged frames only. On a checked port a
//     tagged frame is dropped anyway; on an Open port (spoofCheck off) a
//     guest that tags its DHCP requests itself sends them past the agent
//     onto the L2, as it could send anything else there.
//   - A guest that uses a link-local address not derived by EUI-64 (RFC 7217
//     stable-privacy, as NetworkManager does by default, or a random one) has
//     that address dropped unless its port learns; otherwise configure the
//     guest with addr-gen-mode eui64.
//   - Link-layer address options of neighbour discovery are not inspected,
//     and router advertisements and redirects are not filtered here.
//   - Fields are matched at their fixed offsets. The ethertype is read from
//     the frame as sent, so a VLAN tag the kernel moved into skb metadata
//     still reads as 0x8100 and is dropped.
//
// # Concurrency and cost
//
// Per frame, the chain is ordered for the frames a guest sends most: one
// rule per guest address accepts IPv4 from it, and IPv6 other than ICMPv6
// from it, from the guest MAC, before the MAC check and the ARP and ND
// rules (which would accept them too); the RARP announce comes last.
//
// Each change is one atomic nftables transaction on the port's own table,
// so calls for different ports need no lock between them, and a port's
// calls are serialised by its owner (one attachment, one ADD or DEL at a
// time). Calls act on the calling thread's network namespace, so a caller
// that switches namespaces must do so on a locked OS thread (as
// ns.NetNS.Do does).
//
// No call reads or writes anything of another port: Ensure and Delete send
// one batch, and Verify fetches the port's table, chain and rules. One
// kernel cost remains: closing the netlink socket after a commit that freed
// objects (Delete, re-Ensure of a port) waits for an RCU grace period,
// whatever the number of ports.
package spoof
