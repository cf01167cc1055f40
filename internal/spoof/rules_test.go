package spoof

import (
	"net/netip"
	"testing"

	"github.com/google/nftables/expr"
)

func TestLinkLocalEUI64(t *testing.T) {
	got := linkLocal(mustMAC(t, "52:54:00:12:34:56"))
	if want := netip.MustParseAddr("fe80::5054:ff:fe12:3456"); got != want {
		t.Fatalf("linkLocal = %s, want %s", got, want)
	}
}

// The rules must not depend on the order or form of the IPs passed, since
// Verify rebuilds them from a Port that may list the IPs differently.
func TestRulesCanonical(t *testing.T) {
	mac := mustMAC(t, "52:54:00:12:34:56")
	a := Port{Name: "tbx", MAC: mac,
		IPs: parseIPs("2001:db8::10", "192.0.2.10", "192.0.2.9")}
	b := Port{Name: "tbx", MAC: mac,
		IPs: parseIPs("192.0.2.9", "::ffff:192.0.2.10", "2001:db8::10", "192.0.2.10")}
	ra, rb := portRules(a), portRules(b)
	if len(ra) != len(rb) {
		t.Fatalf("got %d and %d rules for the same addresses", len(ra), len(rb))
	}
	for i := range ra {
		if !sameExprs(ra[i], rb[i]) {
			t.Fatalf("rule %d differs: [%s] vs [%s]", i+1, describeExprs(ra[i]), describeExprs(rb[i]))
		}
	}
}

// Every port chain must end in drop: a jumped-to chain that runs off its
// end returns to the base chain, whose policy is accept.
func TestRulesEndInDrop(t *testing.T) {
	mac := mustMAC(t, "52:54:00:12:34:56")
	for _, ips := range [][]netip.Addr{nil, parseIPs("192.0.2.10"), parseIPs("2001:db8::10")} {
		rules := portRules(Port{Name: "tbx", MAC: mac, IPs: ips})
		last := rules[len(rules)-1]
		v, ok := last[len(last)-1].(*expr.Verdict)
		if !ok || v.Kind != expr.VerdictDrop || len(last) != 2 {
			t.Fatalf("IPs %v: last rule is [%s], want counter drop", ips, describeExprs(last))
		}
	}
}
