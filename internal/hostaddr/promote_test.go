package hostaddr

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tapbridge/tapbridge-cni/internal/bridge"
	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// addrsOf lists the bridge's addresses with the secondary flag, as `ip
// addr` shows them.
func (f *fixture) addrsOf() []string {
	var out []string
	for _, a := range f.br.addrs {
		s := a.Prefix.String()
		if a.Secondary() {
			s += " secondary"
		}
		out = append(out, s)
	}
	return out
}

func (f *fixture) expectAddrs(want ...string) {
	f.t.Helper()
	if got := f.addrsOf(); !reflect.DeepEqual(got, want) {
		f.t.Fatalf("bridge addresses %q, want %q", got, want)
	}
}

func (f *fixture) expectNothingSaved() {
	f.t.Helper()
	if s, ok, err := f.m.State.SavedSetting(promoteSetting); err != nil || ok {
		f.t.Fatalf("saved setting left: %+v %v", s, err)
	}
}

// tapbridge's address first, then the admin's in the same subnet: the
// last release removes only tapbridge's, whatever promote_secondaries
// says, and a value tapbridge changed is put back exactly.
func TestReleaseKeepsTheAdminsSecondaries(t *testing.T) {
	for _, tc := range []struct {
		name     string
		promote  bridge.Promotion
		admin    []string
		wantSets []string
	}{
		{"one, promotion off", bridge.Promotion{Value: "0", All: "0"}, []string{"10.0.0.5/24"}, []string{"1", "0"}},
		{"three, promotion off", bridge.Promotion{Value: "0", All: "0"}, []string{"10.0.0.5/24", "10.0.0.6/24", "10.0.0.7/24"}, []string{"1", "0"}},
		{"none seen, promotion off", bridge.Promotion{Value: "0", All: "0"}, nil, []string{"1", "0"}},
		{"three, promotion on", bridge.Promotion{Value: "1", All: "0"}, []string{"10.0.0.5/24", "10.0.0.6/24", "10.0.0.7/24"}, nil},
		{"one, promotion on for all", bridge.Promotion{Value: "0", All: "1"}, []string{"10.0.0.5/24"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, static("node-a", "10.0.0.250/24"))
			f.br.promote = tc.promote
			f.acquire("k1", "10.0.0.0/24")
			var want []string
			for i, a := range tc.admin {
				f.br.add(netip.MustParsePrefix(a))
				if i == 0 {
					want = append(want, a) // promoted in place of tapbridge's
				} else {
					want = append(want, a+" secondary")
				}
			}
			f.release("k1", "10.0.0.0/24")
			f.expectAddrs(want...)
			if !reflect.DeepEqual(f.br.sets, tc.wantSets) || f.br.promote != tc.promote {
				t.Fatalf("promote_secondaries writes %q, now %+v; want writes %q and %+v", f.br.sets, f.br.promote, tc.wantSets, tc.promote)
			}
			f.expectNothingSaved()
			f.expect()
		})
	}
}

// tapbridge's address as a secondary (re-added after an admin's took the
// subnet) goes alone: no setting is touched.
func TestReleaseOfASecondaryTouchesNoSetting(t *testing.T) {
	f := newFixture(t, static("node-a", "10.0.0.250/24"))
	f.acquire("k1", "10.0.0.0/24")
	f.br.promote.Value = "1"
	f.br.add(netip.MustParsePrefix("10.0.0.5/24"))
	if err := f.br.DelAddr(netip.MustParsePrefix("10.0.0.250/24")); err != nil { // the admin's own removal
		t.Fatal(err)
	}
	f.br.promote.Value = "0"
	if err := f.m.Reconcile(func(string) bool { return true }); err != nil {
		t.Fatal(err)
	}
	f.expectAddrs("10.0.0.5/24", "10.0.0.250/24 secondary")
	f.br.sets = nil
	f.release("k1", "10.0.0.0/24")
	f.expectAddrs("10.0.0.5/24")
	if len(f.br.sets) != 0 {
		t.Fatalf("promote_secondaries written: %q", f.br.sets)
	}
}

// IPv6 has no primary: tapbridge's address goes alone, no setting is
// touched.
func TestReleaseIPv6KeepsTheAdmins(t *testing.T) {
	f := newFixture(t, static("node-a", "fd00::250/64"))
	f.acquire("k1", "fd00::/64")
	f.br.add(netip.MustParsePrefix("fd00::5/64"))
	f.release("k1", "fd00::/64")
	f.expectAddrs("fd00::5/64")
	if len(f.br.sets) != 0 {
		t.Fatalf("promote_secondaries written: %q", f.br.sets)
	}
}

// A crash left the switch on with its old value saved: the next call on
// the bridge, whichever it is, puts it back first and forgets it.
func TestNextCallRestoresASavedSetting(t *testing.T) {
	calls := map[string]func(f *fixture) error{
		"acquire": func(f *fixture) error {
			return f.m.Acquire(context.Background(), "k2", netip.MustParsePrefix("10.1.0.0/24"))
		},
		"release":     func(f *fixture) error { return f.m.Release("k2", netip.MustParsePrefix("10.1.0.0/24")) },
		"release-all": func(f *fixture) error { return f.m.ReleaseAll("k2") },
		"reconcile":   func(f *fixture) error { return f.m.Reconcile(func(string) bool { return true }) },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, static("node-a", "10.1.0.250/24"))
			f.crashWithPromotionOn()
			if err := call(f); err != nil {
				t.Fatal(err)
			}
			if f.br.promote.Value != "0" {
				t.Fatalf("promote_secondaries is %q, want the saved 0 back", f.br.promote.Value)
			}
			f.expectNothingSaved()
		})
	}
}

// crashWithPromotionOn leaves what a call killed between turning the
// switch on and putting it back leaves.
func (f *fixture) crashWithPromotionOn() {
	f.t.Helper()
	s, err := f.m.saving("0")
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.m.State.SaveSetting(s); err != nil {
		f.t.Fatal(err)
	}
	f.br.promote.Value = "1"
}

// A saved value is not put back on another device, nor over a value
// someone changed since.
func TestSavedSettingOfAnotherDeviceIsForgotten(t *testing.T) {
	for name, edit := range map[string]func(*state.Saved, *fakeBridge){
		"another boot":    func(s *state.Saved, _ *fakeBridge) { s.Boot = "an-earlier-boot" },
		"another ifindex": func(s *state.Saved, _ *fakeBridge) { s.Index = 99 },
		"changed since":   func(_ *state.Saved, b *fakeBridge) { b.promote.Value = "2" },
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, static("node-a", "10.1.0.250/24"))
			s, err := f.m.saving("0")
			if err != nil {
				t.Fatal(err)
			}
			f.br.promote.Value = "1"
			edit(&s, f.br)
			if err := f.m.State.SaveSetting(s); err != nil {
				t.Fatal(err)
			}
			before := f.br.promote.Value
			if err := f.m.ReleaseAll("k2"); err != nil {
				t.Fatal(err)
			}
			if len(f.br.sets) != 0 || f.br.promote.Value != before {
				t.Fatalf("wrote %q over %s", f.br.sets, before)
			}
			f.expectNothingSaved()
		})
	}
}

// The pool's probes run under the bridge lock: they stop at PickTimeout
// with an error that names the bound.
func TestPickTimeout(t *testing.T) {
	f := newFixture(t, Policy{Node: "node-a", Pool: []netip.Prefix{netip.MustParsePrefix("10.0.0.240/28")}})
	f.m.PickTimeout = 50 * time.Millisecond
	f.m.Probe = func(ctx context.Context, _ int, _ netip.Addr) (bool, error) {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(3 * time.Second): // unbounded, the pick would take this one
			return false, nil
		}
	}
	err := f.m.Acquire(context.Background(), "k1", netip.MustParsePrefix("10.0.0.0/24"))
	if !errors.Is(err, ErrNoAddress) || !strings.Contains(err.Error(), "lockTimeout") || !strings.Contains(err.Error(), "hostAddress.pool") {
		t.Fatalf("got %v, want ErrNoAddress naming the pool and the bound", err)
	}
	if len(f.br.adds) != 0 {
		t.Fatalf("added %v", f.br.adds)
	}
	f.expect(view("10.0.0.0/24", "", "k1"))
}
