package agent

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/tapbridge/tapbridge-cni/internal/frame"
)

// TestClaims: a claim is learned unless it is the guest's own EUI-64 or
// already learned (nothing to do), or another attachment holds it as its
// EUI-64 or learned link-local (refused); a new claim replaces the old
// one, which another guest may then claim; a failed learn changes
// nothing; a forgotten attachment holds nothing.
func TestClaims(t *testing.T) {
	l := newLinkLocals()
	macA, macB := net.HardwareAddr{2, 0, 0, 0, 0, 0xa}, net.HardwareAddr{2, 0, 0, 0, 0, 0xb}
	l.setEUI("a", macA)
	l.setEUI("b", macB)
	stable, random := netip.MustParseAddr("fe80::3c1a:9b2e:74d0:15f3"), netip.MustParseAddr("fe80::a4d1:c3ff:e9b:7702")
	learns := 0
	ok := func() error { learns++; return nil }
	failing := func() error { return errors.New("no table") }
	for i, c := range []struct {
		key   string
		addr  netip.Addr
		learn func() error
		want  claimResult
		err   bool
	}{
		{"a", eui64(macA), ok, claimKnown, false},
		{"a", eui64(macB), ok, claimHeld, false}, // b's EUI-64
		{"a", stable, failing, 0, true},
		{"b", stable, ok, claimLearned, false}, // the failure left it free
		{"a", stable, ok, claimHeld, false},    // b learned it
		{"b", stable, ok, claimKnown, false},   // a retransmission
		{"b", random, ok, claimLearned, false}, // replaces stable
		{"a", stable, ok, claimLearned, false}, // free again
		{"b", stable, ok, claimHeld, false},
	} {
		got, err := l.claim(c.key, c.addr, c.learn)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("claim %d: %s claims %s: %v (%v), want %v (error %v)", i, c.key, c.addr, got, err, c.want, c.err)
		}
	}
	if learns != 3 {
		t.Errorf("learned %d times, want 3", learns)
	}
	l.forget("b")
	if got, _ := l.claim("a", random, ok); got != claimLearned {
		t.Errorf("b's link-local after b is forgotten: %v, want learned", got)
	}
	if got, _ := l.claim("a", eui64(macB), ok); got != claimLearned {
		t.Errorf("b's EUI-64 after b is forgotten: %v, want learned", got)
	}
	l.keep(map[string]bool{})
	if len(l.holders) != 0 || len(l.eui) != 0 || len(l.learned) != 0 {
		t.Errorf("after keep(none): %v %v %v", l.holders, l.eui, l.learned)
	}
}

// TestDADTarget: only a well-formed DAD solicitation for a link-local of
// fe80::/64 names a target to learn.
func TestDADTarget(t *testing.T) {
	ll := netip.MustParseAddr("fe80::3c1a:9b2e:74d0:15f3")
	parse := func(b []byte) frame.Packet {
		p, err := frame.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := dadFrame(guestMAC, ll)
	if got, ok := dadTarget(parse(good)); !ok || got != ll {
		t.Fatalf("good DAD: %s %v", got, ok)
	}
	withOption := func(opt []byte) []byte {
		h := frame.Header{Src: guestMAC, Dst: guestMAC, IPSrc: netip.IPv6Unspecified(), IPDst: solicitedNode(ll)}
		msg := append(append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, ll.AsSlice()...), opt...)
		return frame.ICMPv6(h, 255, msg)
	}
	badSum := dadFrame(guestMAC, ll)
	badSum[14+40+2] ^= 0xff
	wrongGroup := func() []byte {
		h := frame.Header{Src: guestMAC, Dst: guestMAC, IPSrc: netip.IPv6Unspecified(), IPDst: netip.MustParseAddr("ff02::1")}
		return frame.ICMPv6(h, 255, append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, ll.AsSlice()...))
	}()
	// Code 1 with a checksum that is right for it: only the code is wrong.
	code := func() []byte {
		h := frame.Header{Src: guestMAC, Dst: guestMAC, IPSrc: netip.IPv6Unspecified(), IPDst: solicitedNode(ll)}
		return frame.ICMPv6(h, 255, append([]byte{135, 1, 0, 0, 0, 0, 0, 0}, ll.AsSlice()...))
	}()
	for name, b := range map[string][]byte{
		"bad checksum":               badSum,
		"not to the solicited group": wrongGroup,
		"code 1":                     code,
		"source link-layer option":   withOption([]byte{1, 1, 2, 0, 0, 0, 0, 1}),
		"option of length 0":         withOption([]byte{14, 0, 0, 0, 0, 0, 0, 0}),
		"global target":              dadFrame(guestMAC, netip.MustParseAddr("2001:db8::10")),
		"short":                      frame.ICMPv6(frame.Header{Src: guestMAC, Dst: guestMAC, IPSrc: netip.IPv6Unspecified(), IPDst: solicitedNode(ll)}, 255, []byte{135, 0, 0, 0, 0, 0, 0, 0}),
	} {
		if got, ok := dadTarget(parse(b)); ok {
			t.Errorf("%s: target %s accepted", name, got)
		}
	}
	if _, ok := dadTarget(parse(withOption([]byte{14, 1, 0, 0, 0, 0, 0, 0}))); !ok {
		t.Error("a nonce option (RFC 7527) refused")
	}
}
