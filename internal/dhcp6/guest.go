package dhcp6

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

// DefaultLifetime is the valid lifetime when Guest.Lifetime is unset: long
// enough that an agent restart is invisible, short enough that a guest
// re-created with a new address drops the old one within the hour.
const DefaultLifetime = time.Hour

// maxLifetime keeps lifetimes finite and inside the option's 32-bit seconds
// field (0xffffffff would mean infinity, RFC 8415 7.7).
const maxLifetime = time.Duration(0xfffffffe) * time.Second

// Guest is what one attachment's guest may be told.
type Guest struct {
	MAC      net.HardwareAddr // the guest MAC: DUID-LL/LLT clients must carry it
	Addr     netip.Addr       // its IPv6 address from IPAM (IA_NA); invalid when none
	DNS      []netip.Addr     // IPv6 nameservers; IPv4 entries are dropped
	Search   []string         // domain search list; names DNS cannot carry are dropped
	Lifetime time.Duration    // valid = preferred lifetime; DefaultLifetime when <= 0
}

// address is the guest's address in the form the replies compare against,
// and false when it has none that DHCPv6 can hand out (link-local and
// multicast addresses are not IPAM's to give).
func (g Guest) address() (netip.Addr, bool) {
	a := g.Addr.WithZone("")
	return a, a.Is6() && !a.Is4In6() && a.IsGlobalUnicast()
}

// lifetimes gives the valid (= preferred) lifetime and T1, T2 in whole
// seconds, since the wire carries seconds.
func (g Guest) lifetimes() (valid, t1, t2 time.Duration) {
	valid = g.Lifetime.Truncate(time.Second)
	if valid <= 0 {
		valid = DefaultLifetime
	}
	valid = min(valid, maxLifetime)
	secs := valid / time.Second
	return valid, secs / 2 * time.Second, secs * 4 / 5 * time.Second
}

// nameservers are the guest's IPv6 DNS servers as the library wants them.
func (g Guest) nameservers() []net.IP {
	var ips []net.IP
	for _, a := range g.DNS {
		if a.Is6() && !a.Is4In6() {
			ips = append(ips, net.IP(a.AsSlice()))
		}
	}
	return ips
}

// searchList drops names the library would encode into something else: it
// does not check label lengths, and a label over 63 bytes would turn into a
// compression pointer on the wire.
func (g Guest) searchList() []string {
	var names []string
	for _, n := range g.Search {
		n = strings.TrimSuffix(n, ".")
		if validName(n) {
			names = append(names, n)
		}
	}
	return names
}

func validName(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
	}
	return true
}

// Server is the DHCPv6 server of one node port.
type Server struct {
	DUID dhcpv6.DUID // Server Identifier (NewNetworkServer, or NewServer for a port's own)
}

// NewNetworkServer names the server by a DUID-UUID derived from the
// network's name, the same on every node: every node's agent answers a
// guest from the same attachment record, so they are one logical server
// per network. A live-migrated guest's Renew names the server that gave
// its lease; with a per-node DUID the target node's agent would have to
// discard it (RFC 8415 16.6) and the guest would wait for its Rebind at
// T2. Stable across restarts, with no state, as 11.4 asks.
func NewNetworkServer(network string) (Server, error) {
	if network == "" {
		return Server{}, fmt.Errorf("dhcp6 server: no network name to derive a DUID from")
	}
	sum := sha256.Sum256([]byte("tapbridge dhcp6 server " + network))
	var id [16]byte
	copy(id[:], sum[:16])
	id[6] = id[6]&0x0f | 0x80 // RFC 9562 version 8: custom, name-based
	id[8] = id[8]&0x3f | 0x80 // the RFC 9562 variant
	return Server{DUID: &dhcpv6.DUIDUUID{UUID: id}}, nil
}

// NewServer names the server by a DUID-LL of the node port's MAC: stable
// across agent restarts without any state, as RFC 8415 11.4 intends for
// devices with a permanent link-layer address.
func NewServer(portMAC net.HardwareAddr) (Server, error) {
	if len(portMAC) != 6 {
		return Server{}, fmt.Errorf("dhcp6 server: port MAC %q is not a 6-byte Ethernet address", portMAC)
	}
	mac := append(net.HardwareAddr(nil), portMAC...)
	return Server{DUID: &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac}}, nil
}
