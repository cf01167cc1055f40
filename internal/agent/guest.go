package agent

import (
	"net"
	"net/netip"
	"time"

	"github.com/tapbridge/tapbridge-cni/internal/dhcp4"
	"github.com/tapbridge/tapbridge-cni/internal/dhcp6"
	"github.com/tapbridge/tapbridge-cni/internal/ra"
	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// watched reports whether the agent reads rec's port: a complete record
// whose guest it serves or whose link-local it learns.
func watched(rec state.Record) bool {
	return rec.Ready() && rec.HostIf != "" && (serves(rec) || rec.LearnLinkLocal)
}

// serves reports whether rec's guest is served its addresses: a record
// of a served network, with addresses to give.
func serves(rec state.Record) bool {
	return rec.DHCP != nil && len(rec.IPs) > 0
}

// dhcp4Guest is what DHCPv4 gives rec's guest: its first IPv4 address
// (IPAM gives one per family) with that subnet's gateway.
func dhcp4Guest(rec state.Record, mac net.HardwareAddr) (dhcp4.Guest, bool) {
	g := dhcp4.Guest{
		MAC:    mac,
		DNS:    rec.DNS.Nameservers,
		Domain: rec.DNS.Domain,
		Search: rec.DNS.Search,
		MTU:    rec.MTU,
		Lease:  time.Duration(rec.DHCP.LeaseTime) * time.Second,
	}
	for _, ip := range rec.IPs {
		if ip.Address.Addr().Is4() {
			g.Addr, g.Gateway = ip.Address, ip.Gateway
			break
		}
	}
	if !g.Addr.IsValid() {
		return dhcp4.Guest{}, false
	}
	for _, r := range rec.Routes {
		if r.Dst.Addr().Is4() {
			g.Routes = append(g.Routes, dhcp4.Route{Dst: r.Dst, GW: r.GW})
		}
	}
	return g, true
}

// ipv6Of is the guest's first IPv6 address from IPAM and its gateway.
func ipv6Of(rec state.Record) (state.IP, bool) {
	for _, ip := range rec.IPs {
		if a := ip.Address.Addr(); a.Is6() && !a.Is4In6() {
			return ip, true
		}
	}
	return state.IP{}, false
}

// dhcp6Guest is what DHCPv6 gives rec's guest: its IPv6 address, DNS and
// search list, for as long as the DHCPv4 lease.
func dhcp6Guest(rec state.Record, mac net.HardwareAddr, ip state.IP) dhcp6.Guest {
	return dhcp6.Guest{
		MAC:      mac,
		Addr:     ip.Address.Addr(),
		DNS:      rec.DNS.Nameservers,
		Search:   rec.DNS.Search,
		Lifetime: time.Duration(rec.DHCP.LeaseTime) * time.Second,
	}
}

// raParams is what the port advertises: the guest's prefix on-link and
// the MTU when IPv6 can use it; never a default router (see package ra).
func raParams(rec state.Record, ip state.IP, src net.HardwareAddr) ra.Params {
	p := ra.Params{Prefix: ip.Address.Masked(), SourceMAC: src}
	if rec.MTU >= ra.MinMTU && rec.MTU <= ra.MaxMTU {
		p.MTU = rec.MTU
	}
	return p
}

// prefixes converts what netlink lists.
func prefixes(nets []*net.IPNet) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(nets))
	for _, n := range nets {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ones, _ := n.Mask.Size()
		out = append(out, netip.PrefixFrom(a.Unmap(), ones))
	}
	return out
}
