// Package dhcp4 answers the DHCPv4 requests of one guest with the
// addresses IPAM gave it (RFC 2131, options of RFC 2132 and 3442). It
// decodes and encodes with github.com/insomniacslk/dhcp/dhcpv4 and does
// no I/O: the node agent reads requests off the guest's port and sends
// the replies it is given.
package dhcp4

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// DefaultLease is the lease when the record names none.
const DefaultLease = time.Hour

// Guest is what one guest is served.
type Guest struct {
	MAC     net.HardwareAddr
	Addr    netip.Prefix // the IPv4 address and its subnet's length; invalid: none to give
	Gateway netip.Addr   // the subnet's gateway from IPAM; invalid: none (no router option)
	Routes  []Route      // IPv4 routes from IPAM
	DNS     []netip.Addr // nameservers; only IPv4 ones are sent
	Domain  string
	Search  []string
	MTU     int           // 0: no MTU option
	Lease   time.Duration // DefaultLease when <= 0
}

// Route is a route from IPAM. A zero GW means the subnet's gateway when
// IPAM named one (what a CNI result's route without "gw" means), else
// on-link.
type Route struct {
	Dst netip.Prefix
	GW  netip.Addr
}

func (g Guest) validate() error {
	switch {
	case len(g.MAC) != 6:
		return fmt.Errorf("guest MAC %q is not an Ethernet address", g.MAC)
	case g.Addr.IsValid() && !g.Addr.Addr().Is4():
		return fmt.Errorf("guest address %s is not IPv4", g.Addr)
	case g.Gateway.IsValid() && !g.Gateway.Is4():
		return fmt.Errorf("gateway %s is not IPv4", g.Gateway)
	}
	return nil
}

func (g Guest) lease() time.Duration {
	if g.Lease <= 0 {
		return DefaultLease
	}
	return g.Lease
}

// ChooseServerID picks the server identifier for g: the node's own address
// in g's subnet among hostAddrs (the addresses of the guest's bridge), so
// a renewal the guest unicasts to it is on-link and answered by ARP.
// Without one, the gateway: the guest resolves it on the L2, and its
// renewal still crosses its own port, where the agent reads it and the
// anti-spoofing table keeps it from the gateway. Without either, the
// first address of the subnet that is not the guest's: a unicast renewal
// to it may find no ARP answer, and the guest then rebinds by broadcast
// at T2, which the agent answers. ok is false when the subnet has no
// address but the guest's (a /32).
func ChooseServerID(g Guest, hostAddrs []netip.Prefix) (id netip.Addr, ok bool) {
	if !g.Addr.IsValid() {
		return netip.Addr{}, false
	}
	subnet := g.Addr.Masked()
	for _, a := range hostAddrs {
		if a.Addr().Is4() && subnet.Contains(a.Addr()) && a.Addr() != g.Addr.Addr() {
			return a.Addr(), true
		}
	}
	if g.Gateway.IsValid() && g.Gateway != g.Addr.Addr() {
		return g.Gateway, true
	}
	first := subnet.Addr()
	if subnet.Bits() < 31 {
		first = first.Next() // skip the network address
	}
	for a, i := first, 0; i < 2 && subnet.Contains(a); a, i = a.Next(), i+1 {
		if a != g.Addr.Addr() && !isBroadcast(a, subnet) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func isBroadcast(a netip.Addr, subnet netip.Prefix) bool {
	return subnet.Bits() < 31 && !subnet.Contains(a.Next())
}

// validSearch keeps the names option 119 can carry (RFC 1035 lengths).
func validSearch(names []string) []string {
	var out []string
	for _, n := range names {
		if validName(n) {
			out = append(out, strings.TrimSuffix(n, "."))
		}
	}
	return out
}

func validName(n string) bool {
	n = strings.TrimSuffix(n, ".")
	if n == "" || len(n) > 253 {
		return false
	}
	for _, l := range strings.Split(n, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
	}
	return true
}
