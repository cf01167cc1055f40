package dhcp4

import (
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/rfc1035label"
)

// minMTU is the smallest MTU option 26 may carry (RFC 2132 5.1).
const minMTU = 68

// configOptions are the options of every OFFER and ACK, in the order the
// library writes them anyway (by code).
func configOptions(g Guest) []dhcpv4.Option {
	opts := []dhcpv4.Option{dhcpv4.OptSubnetMask(net.CIDRMask(g.Addr.Bits(), 32))}
	if g.Gateway.IsValid() {
		opts = append(opts, dhcpv4.OptRouter(netIP(g.Gateway)))
	}
	if dns := nameservers(g.DNS); len(dns) > 0 {
		opts = append(opts, dhcpv4.OptDNS(dns...))
	}
	if validName(g.Domain) {
		opts = append(opts, dhcpv4.OptDomainName(g.Domain))
	}
	if g.MTU >= minMTU && g.MTU <= 0xffff {
		opts = append(opts, dhcpv4.Option{Code: dhcpv4.OptionInterfaceMTU, Value: dhcpv4.Uint16(g.MTU)})
	}
	if search := validSearch(g.Search); len(search) > 0 {
		opts = append(opts, dhcpv4.OptDomainSearch(&rfc1035label.Labels{Labels: search}))
	}
	if routes := classless(g); len(routes) > 0 {
		opts = append(opts, dhcpv4.OptClasslessStaticRoute(routes...))
	}
	return opts
}

// leaseOptions are the lease time and its RFC 2131 4.4.5 defaults for T1
// (0.5) and T2 (0.875), stated so every client uses the same.
func leaseOptions(g Guest) []dhcpv4.Option {
	l := g.lease()
	return []dhcpv4.Option{
		dhcpv4.OptIPAddressLeaseTime(l),
		dhcpv4.OptRenewTimeValue(l / 2),
		dhcpv4.OptRebindingTimeValue(l * 7 / 8),
	}
}

// classless is option 121: IPAM's IPv4 routes, then the default route via
// the gateway unless IPAM's routes have one, because a client that gets
// option 121 ignores the router option (RFC 3442).
func classless(g Guest) []*dhcpv4.Route {
	var out []*dhcpv4.Route
	hasDefault := false
	for _, r := range g.Routes {
		if !r.Dst.Addr().Is4() || (r.GW.IsValid() && !r.GW.Is4()) {
			continue
		}
		gw := r.GW
		if !gw.IsValid() && g.Gateway.IsValid() {
			gw = g.Gateway
		}
		hasDefault = hasDefault || r.Dst.Bits() == 0
		out = append(out, route(r.Dst.Masked(), gw))
	}
	if g.Gateway.IsValid() && !hasDefault {
		out = append(out, route(netip.PrefixFrom(netip.IPv4Unspecified(), 0), g.Gateway))
	}
	return out
}

// route is one option 121 entry; an invalid gw is 0.0.0.0, on-link.
func route(dst netip.Prefix, gw netip.Addr) *dhcpv4.Route {
	router := net.IPv4zero.To4()
	if gw.IsValid() {
		router = netIP(gw)
	}
	return &dhcpv4.Route{
		Dest:   &net.IPNet{IP: netIP(dst.Addr()), Mask: net.CIDRMask(dst.Bits(), 32)},
		Router: router,
	}
}

func nameservers(all []netip.Addr) []net.IP {
	var out []net.IP
	for _, a := range all {
		if a.Is4() {
			out = append(out, netIP(a))
		}
	}
	return out
}

func netIP(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }
