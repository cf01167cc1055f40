// Package spoof installs anti-spoofing rules on the host bridge port of a VM
// attachment, so that an untrusted guest can only send frames as itself.
//
// # Layout
//
// All rules live in the node's network namespace (the calling thread's
// current one), in one nftables table of the bridge family per host bridge:
//
//	table bridge tapbridge-<bridge> {
//		map ports {
//			type ifname : verdict
//			elements = { "<port>" : jump <port>, ... }
//		}
//		chain ports {
//			type filter hook prerouting priority filter; policy accept;
//			iifname vmap @ports
//		}
//		chain <port> { ... one regular chain per attachment ... }
//	}
//
// The bridge prerouting hook sees every frame entering a bridge port before
// the bridge decides whether to forward it or hand it to the host, so one
// hook protects the other ports, the uplink and the node itself. The base
// chain dispatches through a verdict map keyed by the ingress port, so adding
// or removing an attachment touches one map element and one chain, whatever
// the number of attachments on the node. Ports without an element (uplinks,
// ports of other plugins) fall through to the accept policy.
//
// # What a port's chain lets through
//
// Everything not listed here is dropped (and counted):
//
//   - Ethernet source must be the guest MAC; checked first.
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
//   - Nothing else: every other ethertype is dropped, including 802.1Q and
//     802.1ad tagged frames (the guest gets no VLAN trunk), LLDP, 802.3/LLC
//     frames such as STP BPDUs, MPLS and PPPoE.
//
// An attachment without IPs (L2-only) gets only the MAC checks: the Ethernet
// source and, for ARP, the sender MAC must be the guest MAC; ARP, IPv4 and
// IPv6 are then accepted with any address, other ethertypes are dropped.
//
// # Limits
//
//   - A guest that uses a link-local address not derived by EUI-64 (RFC 7217
//     stable-privacy, as NetworkManager does by default, or a random one) has
//     that address dropped; configure the guest with addr-gen-mode eui64.
//   - Link-layer address options of neighbour discovery are not inspected,
//     and router advertisements and redirects are not filtered here.
//   - Fields are matched at their fixed offsets. The ethertype is read from
//     the frame as sent, so a VLAN tag the kernel moved into skb metadata
//     still reads as 0x8100 and is dropped.
//
// # Concurrency and cost
//
// Each change is one atomic nftables transaction. Callers serialise calls
// for the same bridge (a per-bridge lock), which DeleteTable relies on;
// creating the table, base chain and map is idempotent anyway. Calls act on
// the calling thread's network namespace, so a caller that switches
// namespaces must do so on a locked OS thread (as ns.NetNS.Do does).
//
// No call lists the rules of other ports or the map's elements: Ensure and
// Delete send a fixed number of small messages, and Verify and Ensure's
// check of the shared objects fetch single objects. Two kernel costs remain:
// a commit that adds rules makes nftables re-validate the table's jump graph
// (a few microseconds per installed port), and closing the netlink socket
// after a commit that freed objects (Delete, re-Ensure of a port) waits for
// an RCU grace period (about 10 ms), whatever the number of ports.
package spoof
