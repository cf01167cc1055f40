package integration

import (
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/internal/hostaddr"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// The admin's addresses on the bridge: tapbridge removes its own host
// address with the last attachment and never one it did not add, nor
// loses one through the kernel (deleting an IPv4 primary deletes its
// secondaries unless promote_secondaries is on), whatever the switch says
// and whichever came first; a switch it changes is put back exactly. Each
// scenario ends compared with the node as it is with the admin's
// addresses alone (State plus AddrView: flags, prefix routes, switch).

const oursV4 = "10.77.0.250/24" // the fixture config's static address

// nodeView is the node as the leak checks see it, plus the admin's view.
type nodeView struct {
	state harness.State
	addrs harness.AddrView
}

func (f *fixture) host(fn func() error) {
	f.t.Helper()
	if err := f.node.Host.Do(fn); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) addrView() harness.AddrView {
	f.t.Helper()
	var v harness.AddrView
	f.host(func() (err error) { v, err = harness.ReadAddrView(harness.BridgeName); return err })
	return v
}

func (f *fixture) view() nodeView {
	f.t.Helper()
	return nodeView{state: f.snapshot(), addrs: f.addrView()}
}

// adminAdd adds the admin's addresses in order; adminDel removes them,
// last first (secondaries before their primary).
func (f *fixture) adminAdd(addrs ...string) {
	f.t.Helper()
	for _, a := range addrs {
		f.host(func() error { return harness.AddAdminAddr(harness.BridgeName, netip.MustParsePrefix(a)) })
	}
}

func (f *fixture) adminDel(addrs ...string) {
	f.t.Helper()
	for _, a := range slices.Backward(addrs) {
		f.host(func() error { return harness.DelAdminAddr(harness.BridgeName, netip.MustParsePrefix(a)) })
	}
}

func (f *fixture) setPromote(v string) {
	f.t.Helper()
	f.host(func() error { return harness.SetPromotion(harness.BridgeName, v) })
}

// adminAlone is the node with the admin's addresses alone on the bridge,
// as the kernel shows them; the bridge is left as it was.
func (f *fixture) adminAlone(addrs ...string) nodeView {
	f.t.Helper()
	f.adminAdd(addrs...)
	v := f.view()
	f.adminDel(addrs...)
	return v
}

func (f *fixture) expectView(want nodeView) {
	f.t.Helper()
	got := f.view()
	if d := want.state.Diff(got.state); d != "" {
		f.t.Errorf("node differs from the snapshot:\n%s", d)
	}
	if !reflect.DeepEqual(got.addrs, want.addrs) {
		f.t.Errorf("bridge addresses, routes and promote_secondaries:\n got %+v\nwant %+v", got.addrs, want.addrs)
	}
}

// expectAddrs checks the bridge's addresses with their flags.
func (f *fixture) expectAddrs(want ...string) {
	f.t.Helper()
	if got := f.addrView().Addrs; !reflect.DeepEqual(got, want) {
		f.t.Fatalf("bridge addresses %q, want %q", got, want)
	}
}

// withFlags is how AddrView shows the admin's addresses: the first is the
// subnet's primary when asPrimary, the others its secondaries.
func withFlags(asPrimary bool, addrs ...string) []string {
	var out []string
	for i, a := range addrs {
		s := a + " permanent"
		if i > 0 || !asPrimary {
			s = a + " secondary permanent"
		}
		out = append(out, s)
	}
	return out
}

func (f *fixture) attachment(pod harness.Netns, n int) harness.Attachment {
	return harness.Attachment{CID: fmt.Sprintf("adm%d-%s", n, f.node.ID), IfName: "net1", Network: "vmnet",
		Bridge: harness.BridgeName, HostAddr: oursV4, Pod: pod}
}

// tapbridge's address first, then the admin's in the same subnet (its
// secondaries): DEL leaves them, with promote_secondaries off and on.
func TestAdminAddrsAfterOurs(t *testing.T) {
	for _, tc := range []struct {
		promote string
		admin   []string
	}{
		{"0", []string{"10.77.0.5/24"}},
		{"0", []string{"10.77.0.5/24", "10.77.0.6/24", "10.77.0.7/24"}},
		{"1", []string{"10.77.0.5/24"}},
		{"1", []string{"10.77.0.5/24", "10.77.0.6/24", "10.77.0.7/24"}},
	} {
		t.Run(fmt.Sprintf("promote=%s,admin=%d", tc.promote, len(tc.admin)), func(t *testing.T) {
			f := newFixture(t)
			a := f.attachment(f.pod(), 1)
			f.setPromote(tc.promote)
			conf := f.conf("1.1.0")
			want := f.adminAlone(tc.admin...)
			f.must(f.add(conf, a))
			f.adminAdd(tc.admin...)
			f.expectAddrs(append([]string{oursV4 + " permanent"}, withFlags(false, tc.admin...)...)...)
			f.must(f.del(conf, a))
			f.expectView(want)
		})
	}
}

// The admin's address first: ADD uses it and adds none, DEL leaves it.
func TestAdminAddrBeforeOurs(t *testing.T) {
	f := newFixture(t)
	a := f.attachment(f.pod(), 1)
	conf := f.conf("1.1.0")
	f.adminAdd("10.77.0.5/24")
	want := f.view()
	f.must(f.add(conf, a))
	f.expectAddrs(withFlags(true, "10.77.0.5/24")...)
	f.must(f.del(conf, a))
	f.expectView(want)
}

// holdBridgeLock runs fn while the test holds the bridge lock, as an
// operator would with flock(1).
func (f *fixture) holdBridgeLock(fn func()) {
	f.t.Helper()
	path, err := harness.BridgeLock(f.stateDir(), harness.BridgeName)
	if err != nil {
		f.t.Fatal(err)
	}
	lock, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		f.t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		f.t.Fatal(err)
	}
	fn()
}

// startBlocked starts call and waits until it queues for the bridge lock
// the test holds.
func (f *fixture) startBlocked(call harness.Call) *harness.Proc {
	f.t.Helper()
	p, err := f.start(call)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := p.WaitBlockedInFlock(30 * time.Second); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func waitOK(t *testing.T, p *harness.Proc) {
	t.Helper()
	if rc, err := p.Wait(30 * time.Second); err != nil || rc != 0 {
		t.Fatalf("rc %d, %v: %s", rc, err, p.Stdout.Bytes())
	}
}

// The admin adds addresses in the subnet while a DEL of its last
// attachment waits for the bridge lock: the DEL leaves them. While an
// ADD waits, the admin's address is there first: ADD uses it.
func TestAdminAddrDuringCall(t *testing.T) {
	t.Run("DEL", func(t *testing.T) {
		f := newFixture(t)
		a := f.attachment(f.pod(), 1)
		conf := f.conf("1.1.0")
		want := f.adminAlone("10.77.0.5/24", "10.77.0.6/24")
		f.must(f.add(conf, a))
		var p *harness.Proc
		f.holdBridgeLock(func() {
			p = f.startBlocked(harness.Call{Command: "DEL", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Stdin: conf})
			f.adminAdd("10.77.0.5/24", "10.77.0.6/24")
		})
		waitOK(t, p)
		f.expectView(want)
	})
	t.Run("ADD", func(t *testing.T) {
		f := newFixture(t)
		a := f.attachment(f.pod(), 1)
		conf := f.conf("1.1.0")
		want := f.adminAlone("10.77.0.5/24")
		var p *harness.Proc
		f.holdBridgeLock(func() {
			p = f.startBlocked(harness.Call{Command: "ADD", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Stdin: conf})
			f.adminAdd("10.77.0.5/24")
		})
		waitOK(t, p)
		f.expectAddrs(withFlags(true, "10.77.0.5/24")...)
		f.must(f.del(conf, a))
		f.expectView(want)
	})
}

// SIGKILL at each step of the removal of tapbridge's primary address,
// promote_secondaries off: the admin's addresses stay throughout, the
// next call on the bridge (another pod's ADD) puts the switch back, and
// the retried DEL and the other pod's DEL end at the snapshot.
func TestAdminAddrsRemovalCrash(t *testing.T) {
	admin := []string{"10.77.0.5/24", "10.77.0.6/24"}
	for _, step := range hostaddr.RemovalSteps() {
		t.Run(step, func(t *testing.T) {
			f := newFixture(t)
			pods := f.pods(2)
			a, b := f.attachment(pods[0], 1), f.attachment(pods[1], 2)
			f.setPromote("0")
			conf := f.conf("1.1.0")
			want := f.adminAlone(admin...)
			f.must(f.add(conf, a))
			f.adminAdd(admin...)
			p, err := f.start(harness.Call{Command: "DEL", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Stdin: conf, Binary: failpointsBin()},
				"TAPBRIDGE_FAILPOINT="+step+":exit")
			if err != nil {
				t.Fatal(err)
			}
			if rc, err := p.Wait(30 * time.Second); err != nil || rc != 137 {
				t.Fatalf("DEL crashing at %s: rc %d, %v, %s", step, rc, err, p.Stdout.Bytes())
			}
			if err := f.stateSane(); err != nil {
				t.Fatal(err)
			}
			f.expectAdminAddrs(admin)
			if on := step == hostaddr.StepPromoteOn || step == hostaddr.StepOwnedDeleted; on != (f.addrView().Promote == "1") {
				t.Fatalf("after a crash at %s promote_secondaries is %s", step, f.addrView().Promote)
			}
			f.must(f.add(conf, b))
			if got := f.addrView().Promote; got != "0" {
				t.Fatalf("the next call left promote_secondaries at %s, want the saved 0 back", got)
			}
			f.expectAdminAddrs(admin)
			f.must(f.del(conf, a))
			f.must(f.del(conf, b))
			f.expectView(want)
		})
	}
}

// expectAdminAddrs checks that every one of the admin's addresses is on
// the bridge.
func (f *fixture) expectAdminAddrs(admin []string) {
	f.t.Helper()
	got := f.addrView().Addrs
	for _, a := range admin {
		if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, a+" ") }) {
			f.t.Fatalf("the admin's %s is gone: %q", a, got)
		}
	}
}

// IPv6 has no primary address: tapbridge's and the admin's in one /64,
// in either order; DEL leaves the admin's and its prefix route, and
// touches no switch.
func TestAdminAddrsIPv6(t *testing.T) {
	v6 := func(c map[string]any) {
		c["hostAddress"] = map[string]any{"nodeName": "node-a", "static": map[string]any{"node-a": []string{"fd77::250/64"}}}
		c["ipam"].(map[string]any)["ranges"] = [][]map[string]any{{{"subnet": "fd77::/64", "rangeStart": "fd77::10", "rangeEnd": "fd77::200"}}}
	}
	for _, adminFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("adminFirst=%v", adminFirst), func(t *testing.T) {
			f := newFixture(t)
			a := f.attachment(f.pod(), 1)
			a.HostAddr = "fd77::250/64"
			conf := f.conf("1.1.0", v6)
			want := f.adminAlone("fd77::5/64")
			if adminFirst {
				f.adminAdd("fd77::5/64")
			}
			f.must(f.add(conf, a))
			if !adminFirst {
				f.adminAdd("fd77::5/64")
				f.expectAdminAddrs([]string{"fd77::250/64", "fd77::5/64"})
			}
			f.must(f.del(conf, a))
			f.expectView(want)
		})
	}
}
