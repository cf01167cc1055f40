package pool

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func mustRange(t *testing.T, subnet, start, end, gw string, excl ...string) Range {
	t.Helper()
	p := func(s string) netip.Addr {
		if s == "" {
			return netip.Addr{}
		}
		return netip.MustParseAddr(s)
	}
	var x []netip.Prefix
	for _, e := range excl {
		x = append(x, netip.MustParsePrefix(e))
	}
	r, err := NewRange(netip.MustParsePrefix(subnet), p(start), p(end), p(gw), x)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDefaults(t *testing.T) {
	r := mustRange(t, "10.0.0.0/24", "", "", "10.0.0.1")
	if r.From.String() != "10.0.0.1" || r.To.String() != "10.0.0.254" {
		t.Fatalf("v4 span %s-%s", r.From, r.To)
	}
	if r.Contains(netip.MustParseAddr("10.0.0.1")) {
		t.Error("gateway handed out")
	}
	r6 := mustRange(t, "2001:db8::/126", "", "", "")
	if r6.From.String() != "2001:db8::1" || r6.To.String() != "2001:db8::3" {
		t.Fatalf("v6 span %s-%s", r6.From, r6.To)
	}
}

func TestErrors(t *testing.T) {
	for name, f := range map[string]func() error{
		"start outside": func() error {
			_, err := NewRange(netip.MustParsePrefix("10.0.0.0/24"), netip.MustParseAddr("10.0.1.1"), netip.Addr{}, netip.Addr{}, nil)
			return err
		},
		"empty": func() error {
			_, err := NewRange(netip.MustParsePrefix("10.0.0.0/24"), netip.MustParseAddr("10.0.0.9"), netip.MustParseAddr("10.0.0.8"), netip.Addr{}, nil)
			return err
		},
		"exclude family": func() error {
			_, err := NewRange(netip.MustParsePrefix("10.0.0.0/24"), netip.Addr{}, netip.Addr{}, netip.Addr{}, []netip.Prefix{netip.MustParsePrefix("::/0")})
			return err
		},
	} {
		if f() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// Walk visits every free address exactly once, whatever its start.
func TestWalk(t *testing.T) {
	set := Set{mustRange(t, "10.0.0.0/24", "10.0.0.10", "10.0.0.20", "10.0.0.15", "10.0.0.18/31"),
		mustRange(t, "10.0.1.0/24", "10.0.1.1", "10.0.1.3", "")}
	taken := map[netip.Addr]bool{netip.MustParseAddr("10.0.1.2"): true}
	for range 20 {
		seen := map[netip.Addr]int{}
		set.Walk(taken, func(a netip.Addr, _ Range) bool { seen[a]++; return true })
		// 10..20 less .15 (gateway) and .18/.19 = 8, plus .1.1 and .1.3.
		if len(seen) != 10 {
			t.Fatalf("walked %d addresses: %v", len(seen), seen)
		}
		for a, n := range seen {
			if n != 1 || taken[a] || !func() bool { _, ok := set.Find(a); return ok }() {
				t.Fatalf("%s visited %d times", a, n)
			}
		}
	}
	if set.Size().Int64() != 14 {
		t.Fatalf("size %v", set.Size())
	}
}

// An excluded prefix is stepped over whole: a /64 with a /65 excluded is
// walked in no time from any start, and only its free half is offered;
// an exclusion that ends past the range's end stops at it.
func TestWalkSkipsExclusions(t *testing.T) {
	set := Set{mustRange(t, "fd00::/64", "", "", "", "fd00::/65")}
	for range 50 {
		var got netip.Addr
		set.Walk(nil, func(a netip.Addr, _ Range) bool { got = a; return false })
		if !got.IsValid() || netip.MustParsePrefix("fd00::/65").Contains(got) {
			t.Fatalf("offered %v", got)
		}
	}
	small := Set{mustRange(t, "10.0.0.0/24", "10.0.0.1", "10.0.0.100", "", "10.0.0.0/26"),
		mustRange(t, "10.0.1.0/24", "10.0.1.1", "10.0.1.5", "")}
	for range 20 {
		seen := map[netip.Addr]bool{}
		small.Walk(nil, func(a netip.Addr, _ Range) bool { seen[a] = true; return true })
		// .64 to .100 of the first range, and all five of the second.
		if len(seen) != 37+5 {
			t.Fatalf("walked %d addresses", len(seen))
		}
	}
}

func TestCandidates(t *testing.T) {
	set := Set{mustRange(t, "10.0.0.0/24", "10.0.0.10", "10.0.0.20", "10.0.0.10", "10.0.0.16/30")}
	var a, b []netip.Addr
	set.Candidates("seed-1", 5, func(x netip.Addr, _ Range) bool { a = append(a, x); return true })
	set.Candidates("seed-1", 5, func(x netip.Addr, _ Range) bool { b = append(b, x); return true })
	if len(a) != 5 || fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("one seed gave %v and %v, want the same 5", a, b)
	}
	seen := map[netip.Addr]bool{}
	for _, x := range a {
		if !set[0].Contains(x) || seen[x] {
			t.Fatalf("candidate %s: excluded, the gateway, or repeated (%v)", x, a)
		}
		seen[x] = true
	}
	// Six addresses may be handed out (.11-.15 and .20; .10 is the
	// gateway, .16-.19 excluded): asking for more yields exactly those.
	var all []netip.Addr
	set.Candidates("seed-2", 20, func(x netip.Addr, _ Range) bool { all = append(all, x); return true })
	slices.SortFunc(all, netip.Addr.Compare)
	if got := fmt.Sprint(all); got != "[10.0.0.11 10.0.0.12 10.0.0.13 10.0.0.14 10.0.0.15 10.0.0.20]" {
		t.Fatalf("candidates of a set of 6: %s", got)
	}
	firsts := map[netip.Addr]bool{}
	big := Set{mustRange(t, "10.0.0.0/16", "", "", "")}
	for i := range 50 {
		big.Candidates(fmt.Sprint("seed", i), 1, func(x netip.Addr, _ Range) bool { firsts[x] = true; return false })
	}
	if len(firsts) < 45 {
		t.Fatalf("50 seeds share first candidates: %d distinct", len(firsts))
	}
}

func TestRefusal(t *testing.T) {
	set := Set{mustRange(t, "10.0.0.0/24", "10.0.0.10", "10.0.0.20", "10.0.0.1", "10.0.0.16/30")}
	for addr, says := range map[string]string{
		"10.0.0.12": "", "10.0.0.1": "gateway", "10.0.0.30": "outside", "10.0.0.17": "10.0.0.16/30", "10.9.0.1": "no range",
	} {
		got := set.Refusal(netip.MustParseAddr(addr))
		if (says == "") != (got == "") || !strings.Contains(got, says) {
			t.Errorf("Refusal(%s) = %q, want one naming %q", addr, got, says)
		}
	}
}
