package guest

import (
	"net/netip"
	"strings"
)

// Lease is one parsed TBDHCP4 or TBDHCP6 line: what a DHCP client's
// script was told, and did.
type Lease struct {
	Family int          // 4 or 6
	Event  string       // udhcpc's (bound, renew, deconfig, nak) or dhclient's $reason (BOUND6, RENEW6, …)
	Addr   netip.Prefix // the address applied; invalid for deconfig, nak and the removals
	Server string       // the server identifier: an IPv4 address, or the DHCPv6 server's DUID in hex
	Fields map[string]string
	Line   string // from "TBDHCP" on
}

// Lost says whether the client removed its address: udhcpc's deconfig
// after a lease was lost, or dhclient's EXPIRE6, RELEASE6, STOP6.
func (l Lease) Lost() bool {
	switch l.Event {
	case "deconfig:", "EXPIRE6:", "RELEASE6:", "STOP6:":
		return true
	}
	return false
}

// Renewal says whether the line is a renewal or a rebinding answered.
func (l Lease) Renewal() bool {
	switch l.Event {
	case "renew", "RENEW6", "REBIND6":
		return true
	}
	return false
}

// ParseLease parses a console line holding a TBDHCP4 or TBDHCP6 record;
// ok is false for any other line.
func ParseLease(line string) (l Lease, ok bool) {
	i := strings.Index(line, "TBDHCP")
	if i < 0 {
		return Lease{}, false
	}
	l.Line = strings.TrimSpace(line[i:])
	f := strings.Fields(l.Line)
	switch {
	case len(f) < 2:
		return Lease{}, false
	case f[0] == "TBDHCP4":
		l.Family = 4
	case f[0] == "TBDHCP6":
		l.Family = 6
	default:
		return Lease{}, false
	}
	l.Event, l.Fields = f[1], map[string]string{}
	for _, kv := range f[2:] {
		if k, v, found := strings.Cut(kv, "="); found {
			l.Fields[k] = v
		}
	}
	l.Server = l.Fields["server"]
	addr := l.Fields["ip"]
	if l.Family == 6 {
		addr = l.Fields["ip6"]
	}
	l.Addr, _ = netip.ParsePrefix(addr)
	return l, true
}

// Leases returns the TBDHCP4 and TBDHCP6 lines printed so far, parsed.
func (vm *VM) Leases() []Lease {
	var out []Lease
	for _, line := range vm.con.snapshot() {
		if l, ok := ParseLease(line); ok {
			out = append(out, l)
		}
	}
	return out
}

// Ready is the parsed TBREADY line: the addresses eth0 has and where
// each came from ("cmdline", "dhcp4", "dhcp6", "none").
type Ready struct {
	IP, IP6      netip.Prefix // invalid: none
	From4, From6 string
	MAC          string
	Line         string
}

// ParseReady parses a console line holding the TBREADY record.
func ParseReady(line string) (r Ready, ok bool) {
	i := strings.Index(line, "TBREADY")
	if i < 0 {
		return Ready{}, false
	}
	r.Line = strings.TrimSpace(line[i:])
	for _, kv := range strings.Fields(r.Line)[1:] {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "ip":
			r.IP, _ = netip.ParsePrefix(v)
		case "ip6":
			r.IP6, _ = netip.ParsePrefix(v)
		case "mac":
			r.MAC = v
		case "from":
			r.From4, r.From6, _ = strings.Cut(v, ",")
		}
	}
	return r, true
}
