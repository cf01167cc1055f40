package hostaddr

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/tapbridge/tapbridge-cni/internal/state"
)

type fixture struct {
	t   *testing.T
	br  *fakeBridge
	m   *Manager
	dir string
}

func newFixture(t *testing.T, policy Policy, admin ...string) *fixture {
	dir := t.TempDir()
	st, err := state.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	br := newFakeBridge()
	for _, a := range admin {
		br.add(netip.MustParsePrefix(a))
	}
	return &fixture{t: t, br: br, dir: dir, m: &Manager{Bridge: br, State: st.Bridge("br-test"), Policy: policy}}
}

func (f *fixture) acquire(key, subnet string) {
	f.t.Helper()
	if err := f.m.Acquire(context.Background(), key, netip.MustParsePrefix(subnet)); err != nil {
		f.t.Fatalf("acquire %s on %s: %v", key, subnet, err)
	}
}

func (f *fixture) release(key, subnet string) {
	f.t.Helper()
	if err := f.m.Release(key, netip.MustParsePrefix(subnet)); err != nil {
		f.t.Fatalf("release %s on %s: %v", key, subnet, err)
	}
}

// subnets is what a reader of the state directory sees.
func (f *fixture) subnets() []state.SubnetView {
	f.t.Helper()
	v, err := state.NewReader(f.dir).Subnets("br-test")
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

func (f *fixture) expect(want ...state.SubnetView) {
	f.t.Helper()
	if got := f.subnets(); !reflect.DeepEqual(got, want) && (len(got) != 0 || len(want) != 0) {
		f.t.Fatalf("state:\n got %+v\nwant %+v", got, want)
	}
}

func view(subnet, owned string, users ...string) state.SubnetView {
	v := state.SubnetView{Subnet: netip.MustParsePrefix(subnet), Users: users}
	if owned != "" {
		v.Owned = netip.MustParsePrefix(owned)
	}
	return v
}

func static(node string, addrs ...string) Policy {
	p := Policy{Node: node}
	for _, a := range addrs {
		p.Static = append(p.Static, netip.MustParsePrefix(a))
	}
	return p
}

func TestFirstAcquireAddsSecondCounts(t *testing.T) {
	f := newFixture(t, static("node-a", "10.0.0.250/16"))
	f.acquire("k1", "10.0.0.7/24")
	f.acquire("k2", "10.0.0.0/24")
	if want := []netip.Prefix{netip.MustParsePrefix("10.0.0.250/24")}; !reflect.DeepEqual(f.br.adds, want) {
		t.Fatalf("added %v, want %v (once, with the subnet's prefix length)", f.br.adds, want)
	}
	f.expect(view("10.0.0.0/24", "10.0.0.250/24", "k1", "k2"))
}

func TestAdminAddressIsUsedAndNeverRemoved(t *testing.T) {
	f := newFixture(t, static("node-a", "10.0.0.250/24"), "10.0.0.1/24")
	f.acquire("k1", "10.0.0.0/24")
	f.acquire("k2", "10.0.0.0/24")
	f.expect(view("10.0.0.0/24", "", "k1", "k2"))
	f.release("k1", "10.0.0.0/24")
	if err := f.m.ReleaseAll("k2"); err != nil {
		t.Fatal(err)
	}
	if err := f.m.Reconcile(func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if len(f.br.adds) != 0 || len(f.br.dels) != 0 || !f.br.has("10.0.0.1/24") {
		t.Fatalf("the admin's address was touched: added %v, removed %v, now %v", f.br.adds, f.br.dels, f.br.addrs)
	}
	f.expect()
}

func TestLastReleaseRemovesOnlyTheOwnedAddress(t *testing.T) {
	f := newFixture(t, static("node-a", "10.0.0.250/24", "10.1.0.250/24"), "192.168.1.1/24")
	f.acquire("k1", "10.0.0.0/24")
	f.acquire("k2", "10.0.0.0/24")
	f.acquire("k2", "10.1.0.0/24")
	f.release("k1", "10.0.0.0/24")
	if len(f.br.dels) != 0 {
		t.Fatalf("removed %v while k2 still uses the subnet", f.br.dels)
	}
	f.release("k2", "10.0.0.0/24")
	if want := []netip.Prefix{netip.MustParsePrefix("10.0.0.250/24")}; !reflect.DeepEqual(f.br.dels, want) {
		t.Fatalf("removed %v, want %v", f.br.dels, want)
	}
	if !f.br.has("10.1.0.250/24") || !f.br.has("192.168.1.1/24") {
		t.Fatalf("another address went: %v", f.br.addrs)
	}
	f.expect(view("10.1.0.0/24", "10.1.0.250/24", "k2"))
}

// A DEL killed after it emptied a subnet's users but before it removed
// the address: the retried DEL's ReleaseAll removes it.
func TestReleaseAllFinishesAnInterruptedRelease(t *testing.T) {
	f := newFixture(t, static("node-a", "10.0.0.250/24"))
	f.acquire("k1", "10.0.0.0/24")
	st, _ := state.Open(f.dir)
	if _, err := st.Bridge("br-test").Subnet(netip.MustParsePrefix("10.0.0.0/24")).Users().Remove("k1"); err != nil {
		t.Fatal(err)
	}
	if err := f.m.ReleaseAll("k1"); err != nil {
		t.Fatal(err)
	}
	if f.br.has("10.0.0.250/24") {
		t.Fatalf("the address of the interrupted release is still there: %v", f.br.addrs)
	}
	f.expect()
}

// With the bridge gone, the state is still released.
func TestReleaseAllWithoutTheBridge(t *testing.T) {
	f := newFixture(t, static("node-a", "10.0.0.250/24"))
	f.acquire("k1", "10.0.0.0/24")
	f.m.Bridge = nil
	if err := f.m.ReleaseAll("k1"); err != nil {
		t.Fatal(err)
	}
	f.expect()
}

func TestReconcile(t *testing.T) {
	f := newFixture(t, static("node-a", "10.0.0.250/24", "10.1.0.250/24"))
	f.acquire("k1", "10.0.0.0/24")
	f.acquire("dead1", "10.0.0.0/24")
	f.acquire("dead2", "10.1.0.0/24")
	if err := f.br.DelAddr(netip.MustParsePrefix("10.0.0.250/24")); err != nil { // a reboot, an admin's flush
		t.Fatal(err)
	}
	if err := f.m.Reconcile(func(key string) bool { return key == "k1" }); err != nil {
		t.Fatal(err)
	}
	if !f.br.has("10.0.0.250/24") {
		t.Fatalf("the owned address a live attachment needs was not restored: %v", f.br.addrs)
	}
	if f.br.has("10.1.0.250/24") {
		t.Fatalf("the address of a subnet with no live user stayed: %v", f.br.addrs)
	}
	f.expect(view("10.0.0.0/24", "10.0.0.250/24", "k1"))
}

func TestNoCandidate(t *testing.T) {
	f := newFixture(t, Policy{Node: "node-a", Pool: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")}})
	err := f.m.Acquire(context.Background(), "k1", netip.MustParsePrefix("10.0.0.0/24"))
	if !errors.Is(err, ErrNoAddress) || !strings.Contains(err.Error(), "10.0.0.0/24") || !strings.Contains(err.Error(), `"node-a"`) {
		t.Fatalf("got %v, want ErrNoAddress naming the subnet and the node", err)
	}
	if len(f.br.adds) != 0 {
		t.Fatalf("added %v", f.br.adds)
	}
}

// A pool address that answers the probe is skipped; the probe gets the
// bridge's index.
func TestProbeSkipsAnAddressInUse(t *testing.T) {
	policy := Policy{Node: "node-a", Pool: []netip.Prefix{netip.MustParsePrefix("10.0.0.240/28")}}
	f := newFixture(t, policy)
	cands := Candidates(policy, netip.MustParsePrefix("10.0.0.0/24"))
	var probed []netip.Addr
	f.m.Probe = func(_ context.Context, ifindex int, a netip.Addr) (bool, error) {
		if ifindex != 7 {
			t.Errorf("probe on ifindex %d, want the bridge's 7", ifindex)
		}
		probed = append(probed, a)
		return a == cands[0].Addr(), nil
	}
	f.acquire("k1", "10.0.0.0/24")
	if len(probed) != 2 || !reflect.DeepEqual(f.br.adds, cands[1:2]) {
		t.Fatalf("probed %v, added %v; want the second candidate %v", probed, f.br.adds, cands[1])
	}
	f.expect(view("10.0.0.0/24", cands[1].String(), "k1"))
}

// An IPv6 pick that fails the kernel's DAD is removed, with its owned
// record, and the next one is taken.
func TestIPv6DADFailure(t *testing.T) {
	policy := Policy{Node: "node-a", Pool: []netip.Prefix{netip.MustParsePrefix("2001:db8::/64")}}
	f := newFixture(t, policy)
	cands := Candidates(policy, netip.MustParsePrefix("2001:db8::/64"))
	f.br.dadFailed = map[netip.Addr]bool{cands[0].Addr(): true}
	f.acquire("k1", "2001:db8::/64")
	if !reflect.DeepEqual(f.br.dels, cands[:1]) || f.br.has(cands[0].String()) || !f.br.has(cands[1].String()) {
		t.Fatalf("removed %v, now %v; want %v replaced by %v", f.br.dels, f.br.addrs, cands[0], cands[1])
	}
	f.expect(view("2001:db8::/64", cands[1].String(), "k1"))
}

// A node's static IPv6 address is the admin's choice, not probed: it is
// added without DAD (usable at once), and a pool pick still with it.
func TestIPv6StaticWithoutDAD(t *testing.T) {
	policy := static("node-a", "2001:db8::250/64")
	policy.Pool = []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/64")}
	f := newFixture(t, policy)
	f.br.dadFailed = map[netip.Addr]bool{netip.MustParseAddr("2001:db8::250"): true}
	f.acquire("k1", "2001:db8::/64")
	f.acquire("k2", "2001:db8:1::/64")
	want := []netip.Prefix{netip.MustParsePrefix("2001:db8::250/64")}
	if !reflect.DeepEqual(f.br.noDAD, want) || !f.br.has("2001:db8::250/64") {
		t.Fatalf("added without DAD %v (bridge %v), want only the static %v", f.br.noDAD, f.br.addrs, want)
	}
}

func TestEveryCandidateInUse(t *testing.T) {
	f := newFixture(t, Policy{Node: "node-a", Pool: []netip.Prefix{netip.MustParsePrefix("10.0.0.252/30")}})
	f.m.Probe = func(context.Context, int, netip.Addr) (bool, error) { return true, nil }
	err := f.m.Acquire(context.Background(), "k1", netip.MustParsePrefix("10.0.0.0/24"))
	if !errors.Is(err, ErrNoAddress) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("got %v, want ErrNoAddress: every candidate in use", err)
	}
}
