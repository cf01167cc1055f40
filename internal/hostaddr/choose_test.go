package hostaddr

import (
	"net/netip"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestStaticWins(t *testing.T) {
	p := Policy{Node: "a", Static: []netip.Prefix{pfx("172.16.3.150/24"), pfx("172.16.13.150/16")}, Pool: []netip.Prefix{pfx("172.16.13.240/28")}}
	got := Candidates(p, pfx("172.16.13.0/24"))
	if len(got) != 1 || got[0] != pfx("172.16.13.150/24") {
		t.Fatalf("got %v: the static address, with the subnet's prefix length", got)
	}
}

func TestPool(t *testing.T) {
	p := Policy{Node: "node-a", Pool: []netip.Prefix{pfx("172.16.13.240/28"), pfx("10.0.0.0/28")}}
	got := Candidates(p, pfx("172.16.13.0/24"))
	if len(got) != 15 { // .240-.255 less the broadcast
		t.Fatalf("got %d candidates: %v", len(got), got)
	}
	seen := map[netip.Prefix]bool{}
	for _, c := range got {
		if !pfx("172.16.13.240/28").Contains(c.Addr()) || c.Bits() != 24 || c.Addr() == netip.MustParseAddr("172.16.13.255") || seen[c] {
			t.Fatalf("bad candidate %v in %v", c, got)
		}
		seen[c] = true
	}
	if again := Candidates(p, pfx("172.16.13.0/24")); again[0] != got[0] {
		t.Fatal("the order must be stable for a node")
	}
	starts := map[netip.Prefix]bool{}
	for _, node := range []string{"node-a", "node-b", "node-c", "node-d", "node-e", "node-f"} {
		starts[Candidates(Policy{Node: node, Pool: p.Pool}, pfx("172.16.13.0/24"))[0]] = true
	}
	if len(starts) < 3 {
		t.Fatalf("6 nodes start at only %d distinct pool addresses: the per-node offset is not spreading them", len(starts))
	}
}

func TestPoolEdges(t *testing.T) {
	// A pool wider than the subnet is clipped to it; a huge IPv6 pool is
	// capped; a pool outside the subnet gives nothing.
	got := Candidates(Policy{Node: "a", Pool: []netip.Prefix{pfx("172.16.0.0/16")}}, pfx("172.16.13.0/30"))
	if len(got) != 2 {
		t.Fatalf("/30: %v", got)
	}
	v6 := Candidates(Policy{Node: "a", Pool: []netip.Prefix{pfx("2001:db8::/64")}}, pfx("2001:db8::/64"))
	if len(v6) != maxPoolTries || v6[0].Bits() != 64 {
		t.Fatalf("v6: %d candidates", len(v6))
	}
	if none := Candidates(Policy{Node: "a", Pool: []netip.Prefix{pfx("10.0.0.0/24")}}, pfx("172.16.13.0/24")); none != nil {
		t.Fatalf("foreign pool: %v", none)
	}
	if none := Candidates(Policy{Node: "a", Pool: []netip.Prefix{pfx("2001:db8::/64")}}, pfx("172.16.13.0/24")); none != nil {
		t.Fatalf("other family: %v", none)
	}
}
