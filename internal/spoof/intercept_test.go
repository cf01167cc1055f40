package spoof

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// requestProbes are the requests a served guest's port keeps off the L2:
// every one of them is "not honest" (must not arrive anywhere).
func requestProbes(gm net.HardwareAddr) []probe {
	ll := linkLocal(gm)
	v4 := func(src, dst netip.Addr, sport, dport uint16) func(net.HardwareAddr, []byte) []byte {
		return func(d net.HardwareAddr, m []byte) []byte {
			return ether(d, gm, unix.ETH_P_IP, ipv4(src, dst, unix.IPPROTO_UDP, udp4(sport, dport, m)))
		}
	}
	v6 := func(src, dst netip.Addr, dport uint16) func(net.HardwareAddr, []byte) []byte {
		return func(d net.HardwareAddr, m []byte) []byte {
			return ether(d, gm, unix.ETH_P_IPV6, udp6(src, dst, 546, dport, m))
		}
	}
	allServers := netip.MustParseAddr("ff02::1:2")
	return []probe{
		{"DHCP discover from 0.0.0.0", false, v4(zero4, bcast4, 68, 67)},
		{"DHCP renewal unicast from the guest IP", false, v4(guest4, host4, 68, 67)},
		{"DHCP to port 67 from another source port", false, v4(guest4, host4, 40000, 67)},
		{"DHCPv6 solicit from the link-local", false, v6(ll, allServers, 547)},
		{"DHCPv6 renew from the guest IP", false, v6(guest6, gateway6, 547)},
		{"router solicitation from the link-local", false, ndFrame(gm, ll, icmpv6RouterSolicit, zero6, nil)},
		{"router solicitation from ::", false, ndFrame(gm, zero6, icmpv6RouterSolicit, zero6, nil)},
	}
}

// TestInterceptDataPath checks that a served port drops the guest's
// requests, counted apart from spoof drops, and changes nothing else: with
// source checks the honest and forged probes fare as before, without them
// (Open) everything but the requests passes.
func TestInterceptDataPath(t *testing.T) {
	harness.RequireRoot(t)
	top := newTopology(t)
	requests := requestProbes(top.guestMAC)
	expectAll(t, "baseline without rules", top.exchange(t, "baseline", requests))

	honest, forged := honestProbes(top.guestMAC), forgedProbes(top.guestMAC)
	// Without interception a DHCP discover is honest; with it, a request.
	honest = slices.DeleteFunc(honest, func(p probe) bool { return p.name == "DHCP discover from 0.0.0.0" })
	cases := []struct {
		name  string
		port  Port
		pass  []probe
		drops int // frames the spoof rules drop (each probe sent twice)
	}{
		{"checked", Port{Name: top.port, MAC: top.guestMAC, IPs: []netip.Addr{guest4, guest6}, Intercept: true},
			honest, 2 * len(forged)},
		{"open", Port{Name: top.port, MAC: top.guestMAC, IPs: []netip.Addr{guest4, guest6}, Intercept: true, Open: true},
			append(honest, asHonest(forged)...), 0},
	}
	for _, c := range cases {
		in(t, top.h, func() error { return Ensure(c.port) })
		in(t, top.h, func() error { return Verify(c.port) })
		probes := append(append([]probe{}, c.pass...), requests...)
		if c.drops > 0 {
			probes = append(probes, forged...)
		}
		for _, d := range top.exchange(t, c.name, probes) {
			ok := d.arrivedAll()
			if !d.probe.honest {
				ok = d.arrivedNone()
			}
			if !ok {
				t.Errorf("%s: %q: peer=%v host(bcast)=%v host(unicast)=%v, want honest=%v",
					c.name, d.probe.name, d.peerBcast, d.hostBcast, d.hostU, d.probe.honest)
			}
		}
		var n Counts
		in(t, top.h, func() error {
			var err error
			n, err = ReadCounts(top.port)
			return err
		})
		t.Logf("%s: counters %+v", c.name, n)
		if n.Intercepted != uint64(2*len(requests)) || n.Dropped != uint64(c.drops) {
			t.Errorf("%s: intercepted %d dropped %d, want %d and %d", c.name, n.Intercepted, n.Dropped,
				2*len(requests), c.drops)
		}
	}
	in(t, top.h, func() error { return Delete(top.port) })
	in(t, top.h, func() error {
		if _, err := ReadCounts(top.port); !errors.Is(err, ErrNoTable) {
			t.Errorf("ReadCounts of a deleted port: %v, want ErrNoTable", err)
		}
		return nil
	})
}

// asHonest marks probes that an open port lets through. A frame with a
// foreign source MAC still passes the port (no checks at all), so all do.
func asHonest(ps []probe) []probe {
	out := make([]probe, len(ps))
	for i, p := range ps {
		p.honest = true
		out[i] = p
	}
	return out
}

func TestOpenNeedsIntercept(t *testing.T) {
	p := Port{Name: "tb0", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Open: true}
	if err := p.validate(); err == nil {
		t.Fatal("an open port without interception validated")
	}
}
