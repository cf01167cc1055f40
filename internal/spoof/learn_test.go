package spoof

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// Link-locals a guest may use that are not its EUI-64 one: an RFC 7217
// stable-privacy one (NetworkManager's default) and a random one
// (Windows' default).
var (
	stablePrivacyLL = netip.MustParseAddr("fe80::3c1a:9b2e:74d0:15f3")
	randomLL        = netip.MustParseAddr("fe80::a4d1:c3ff:0e9b:7702")
)

// linkLocalProbes are the frames a guest using ll sends once it has the
// address: honest says whether the port must let them through.
func linkLocalProbes(gm net.HardwareAddr, ll netip.Addr, honest bool) []probe {
	return []probe{
		{"UDP from " + ll.String(), honest, udp6Frame(gm, ll, allNodes)},
		{"NS from " + ll.String() + " resolving the gateway", honest, ndFrame(gm, ll, icmpv6NeighborSolicit, gateway6, nil)},
		{"NA for " + ll.String(), honest, ndFrame(gm, ll, icmpv6NeighborAdvert, ll, nil)},
		{"NA for " + ll.String() + " from the guest IP", honest, ndFrame(gm, guest6, icmpv6NeighborAdvert, ll, nil)},
		{"DAD NS for " + ll.String(), honest, ndFrame(gm, zero6, icmpv6NeighborSolicit, ll, nil)},
	}
}

// TestLearnedLinkLocalDataPath: a learning port drops a link-local that
// is not the EUI-64 one until it is in the port's set, passes it (as a
// source, an NA target and a DAD target) once it is, and drops it again
// once another replaced it; the EUI-64 link-local passes all along, and
// re-running Ensure or Verify keeps and ignores what was learned.
func TestLearnedLinkLocalDataPath(t *testing.T) {
	harness.RequireRoot(t)
	top := newTopology(t)
	gm := top.guestMAC
	port := Port{Name: top.port, MAC: gm, IPs: []netip.Addr{guest4, guest6}, LearnLinkLocal: true}
	eui := linkLocalProbes(gm, linkLocal(gm), true)
	forged := forgedProbes(gm)
	in(t, top.h, func() error { return Ensure(port) })
	in(t, top.h, func() error { return Verify(port) })
	expectLearned(t, top, nil)

	phases := []struct {
		name  string
		learn netip.Addr // invalid: learn nothing in this phase
		pass  netip.Addr // the link-local that must pass, if any
		drop  []netip.Addr
	}{
		{"before learning", netip.Addr{}, netip.Addr{}, []netip.Addr{stablePrivacyLL, randomLL}},
		{"stable-privacy learned", stablePrivacyLL, stablePrivacyLL, []netip.Addr{randomLL}},
		{"random replaced it", randomLL, randomLL, []netip.Addr{stablePrivacyLL}},
	}
	for _, ph := range phases {
		if ph.learn.IsValid() {
			in(t, top.h, func() error { return Learn(top.port, ph.learn) })
		}
		probes := append(slices.Clone(eui), forged...)
		if ph.pass.IsValid() {
			probes = append(probes, linkLocalProbes(gm, ph.pass, true)...)
		}
		for _, a := range ph.drop {
			probes = append(probes, linkLocalProbes(gm, a, false)...)
		}
		expectProbes(t, top, ph.name, probes)
		if ph.pass.IsValid() {
			expectLearned(t, top, []netip.Addr{ph.pass})
		}
	}

	// The set is state, not configuration: Ensure keeps it, Verify does
	// not look into it.
	in(t, top.h, func() error { return Ensure(port) })
	expectLearned(t, top, []netip.Addr{randomLL})
	in(t, top.h, func() error { return Verify(port) })
	expectProbes(t, top, "after Ensure again", linkLocalProbes(gm, randomLL, true))

	in(t, top.h, func() error { return Delete(top.port) })
	in(t, top.h, func() error {
		if _, err := Learned(top.port); !errors.Is(err, ErrNoLearnedSet) {
			t.Errorf("Learned after Delete: %v, want ErrNoLearnedSet", err)
		}
		return wantNoTables()
	})
}

// expectProbes sends probes from the VM and checks that the honest ones
// arrive everywhere, the others nowhere, and that the drop counters grew
// by one per copy of each dropped probe.
func expectProbes(t *testing.T, top *topology, phase string, probes []probe) {
	t.Helper()
	var before, after uint64
	in(t, top.h, func() (err error) { before, err = dropCount(top.port); return err })
	dropped := 0
	for _, d := range top.exchange(t, phase, probes) {
		ok := d.arrivedAll()
		if !d.probe.honest {
			dropped += 2
			ok = d.arrivedNone()
		}
		if !ok {
			t.Errorf("%s: %q: peer=%v host(bcast)=%v host(unicast)=%v, want honest=%v",
				phase, d.probe.name, d.peerBcast, d.hostBcast, d.hostU, d.probe.honest)
		}
	}
	in(t, top.h, func() (err error) { after, err = dropCount(top.port); return err })
	if after-before != uint64(dropped) {
		t.Errorf("%s: drop counters grew by %d, want %d (one per dropped frame)", phase, after-before, dropped)
	}
}

func expectLearned(t *testing.T, top *topology, want []netip.Addr) {
	t.Helper()
	var got []netip.Addr
	in(t, top.h, func() (err error) { got, err = Learned(top.port); return err })
	if !slices.Equal(got, want) {
		t.Errorf("learned %v, want %v", got, want)
	}
}

// TestLearnedSetLifecycle: Ensure makes the set of a learning port and
// never empties it; Verify needs the set and its rules but not its
// contents; Learn refuses what is not a link-local and a port that does
// not learn.
func TestLearnedSetLifecycle(t *testing.T) {
	harness.RequireRoot(t)
	h := newNS(t, randHex(t, 4), "host")
	p := Port{Name: "tblearn0000001", MAC: mustMAC(t, "52:54:00:12:34:56"),
		IPs: parseIPs("192.0.2.10", "2001:db8::10"), LearnLinkLocal: true}
	plain := p
	plain.LearnLinkLocal = false
	wantLearned := func(want ...netip.Addr) func() error {
		return func() error {
			got, err := Learned(p.Name)
			if err != nil {
				return err
			}
			if !slices.Equal(got, want) {
				t.Errorf("learned %v, want %v", got, want)
			}
			return nil
		}
	}
	runSteps(t, doIn(h), []step{
		{"devices", func() error { return addDevices(p.Name) }},
		{"learn before the table exists", func() error {
			return wantErrIs(Learn(p.Name, randomLL), ErrNoLearnedSet)
		}},
		{"ensure a plain port", func() error { return Ensure(plain) }},
		{"learn on a plain port", func() error { return wantErrIs(Learn(p.Name, randomLL), ErrNoLearnedSet) }},
		{"verify as learning: no set", func() error { return wantErrNaming(Verify(p), p.Name, "set ll is missing") }},
		{"ensure learning", func() error { return Ensure(p) }},
		{"verify with the set empty", func() error { return Verify(p) }},
		{"learn", func() error { return Learn(p.Name, stablePrivacyLL) }},
		{"learned", wantLearned(stablePrivacyLL)},
		{"verify with an element", func() error { return Verify(p) }},
		{"ensure again", func() error { return Ensure(p) }},
		{"ensure kept the element", wantLearned(stablePrivacyLL)},
		{"ensure with other IPs", func() error { p.IPs = parseIPs("192.0.2.11"); return Ensure(p) }},
		{"other IPs kept the element", wantLearned(stablePrivacyLL)},
		{"verify as plain: the lookups differ", func() error {
			plain.IPs = p.IPs
			return wantErrNaming(Verify(plain), p.Name, "rule")
		}},
		{"learn the same again", func() error { return Learn(p.Name, stablePrivacyLL) }},
		{"still one", wantLearned(stablePrivacyLL)},
		{"learn a global address", func() error { return wantErrNaming(Learn(p.Name, guest6), "fe80::/64") }},
		{"learn outside fe80::/64", func() error {
			return wantErrNaming(Learn(p.Name, netip.MustParseAddr("fe80:1::1")), "fe80::/64")
		}},
		{"learn a multicast address", func() error {
			return wantErrNaming(Learn(p.Name, netip.MustParseAddr("ff02::1")), "fe80::/64")
		}},
		{"refusals changed nothing", wantLearned(stablePrivacyLL)},
		{"delete", func() error { return Delete(p.Name) }},
		{"ruleset empty", wantNoTables},
	})
}

func TestOpenCannotLearn(t *testing.T) {
	p := Port{Name: "tb0", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Intercept: true, Open: true, LearnLinkLocal: true}
	if err := p.validate(); err == nil {
		t.Fatal("an open port that learns validated")
	}
}

func wantErrIs(err, target error) error {
	if !errors.Is(err, target) {
		return fmt.Errorf("got error %v, want %v", err, target)
	}
	return nil
}
