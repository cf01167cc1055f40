package integration

import (
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// attachN adds n pods through r and returns their runtime configs.
func attachN(t *testing.T, f *fixture, r *runtime, n int) []*libcni.RuntimeConf {
	t.Helper()
	var rts []*libcni.RuntimeConf
	for i := 0; i < n; i++ {
		rt := rtConf(fmt.Sprintf("cid-gc-%02d", i), f.pod(), "eth0")
		if _, err := r.add(rt); err != nil {
			t.Fatal(err)
		}
		rts = append(rts, rt)
	}
	return rts
}

func gcConf(f *fixture, valid []*libcni.RuntimeConf, mods ...func(map[string]any)) []byte {
	list := []types.GCAttachment{}
	for _, rt := range valid {
		list = append(list, types.GCAttachment{ContainerID: rt.ContainerID, IfName: rt.IfName})
	}
	return f.conf("1.1.0", append(mods, func(c map[string]any) { c["cni.dev/valid-attachments"] = list })...)
}

// D1 (plugin's own GC, as a runtime without libcni's cache would call it)
// and D5: the 4 stale attachments go, IPAM DEL releases their IPs, IPAM
// gets GC with the same list, and the 6 valid ones still pass CHECK.
func TestGCSubset(t *testing.T) {
	f := newFixture(t)
	rec := f.recorder()
	r := f.runtime(f.conf("1.1.0", withRecorder))
	rts := attachN(t, f, r, 10)
	out := f.exec(harness.Call{Command: "GC", Stdin: gcConf(f, rts[:6], withRecorder)})
	if out.RC != 0 {
		t.Fatalf("GC: %s", out.Stdout)
	}
	for _, rt := range rts[:6] {
		if err := r.check(rt); err != nil {
			t.Errorf("valid attachment %s broken by GC: %v", rt.ContainerID, err)
		}
	}
	s := f.snapshot()
	if n := countPrefix(s.Host.Names(), "tb"); n != 6 {
		t.Errorf("host veths after GC: %d, want 6", n)
	}
	if n := countPrefix(s.IPAM.Files, "vmnet/10."); n != 6 {
		t.Errorf("IPAM leases after GC: %v, want 6", s.IPAM.Files)
	}
	f.expectBridgeAddr("10.77.0.250/24", true)
	calls := strings.Join(rec.Calls(), "\n")
	for _, rt := range rts[6:] {
		if !strings.Contains(calls, "DEL "+rt.ContainerID+" eth0") {
			t.Errorf("no IPAM DEL for stale %s in:\n%s", rt.ContainerID, calls)
		}
	}
	if !strings.Contains(calls, `GC   "cni.dev/valid-attachments":[{"containerID":"cid-gc-00"`) {
		t.Errorf("IPAM did not get GC with the valid list:\n%s", calls)
	}
}

func countPrefix(list []string, prefix string) int {
	n := 0
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

// D1 through libcni (which DELs stale cached attachments itself) and D2.
func TestGCThroughLibcni(t *testing.T) {
	f := newFixture(t)
	before := f.snapshot()
	r := f.runtime(f.conf("1.1.0"))
	rts := attachN(t, f, r, 4)
	valid := []types.GCAttachment{{ContainerID: rts[0].ContainerID, IfName: "eth0"}}
	if err := r.gc(&libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if err := r.check(rts[0]); err != nil {
		t.Fatalf("valid attachment broken: %v", err)
	}
	if err := r.gc(&libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}); err != nil {
		t.Fatalf("GC with an empty list: %v", err)
	}
	f.expectClean(before)
}

// D2 without libcni's help, D3 and D6: an empty list tears everything
// down; no key tears nothing down; a malformed list or an old version
// deletes nothing.
func TestGCLists(t *testing.T) {
	f := newFixture(t)
	before := f.snapshot()
	r := f.runtime(f.conf("1.1.0"))
	attachN(t, f, r, 3)
	live := f.snapshot()
	bad := []struct {
		name string
		conf []byte
		code uint
	}{
		{"no key", f.conf("1.1.0"), 0},
		{"list is a string", f.conf("1.1.0", func(c map[string]any) { c["cni.dev/valid-attachments"] = "all" }), 6},
		{"entry without ifname", f.conf("1.1.0", func(c map[string]any) {
			c["cni.dev/valid-attachments"] = []any{map[string]any{"containerID": "x"}}
		}), 7},
		{"version 1.0.0", gcConf(f, nil, func(c map[string]any) { c["cniVersion"] = "1.0.0" }), 1},
	}
	for _, c := range bad {
		out := f.exec(harness.Call{Command: "GC", Stdin: c.conf})
		if (c.code == 0) != (out.RC == 0) || (out.Err != nil && out.Err.Code != c.code) {
			t.Errorf("%s: rc %d %s, want code %d", c.name, out.RC, out.Stdout, c.code)
		}
		if d := live.Diff(f.snapshot()); d != "" {
			t.Errorf("%s: GC deleted something:\n%s", c.name, d)
		}
	}
	out := f.exec(harness.Call{Command: "GC", Stdin: gcConf(f, nil)})
	if out.RC != 0 {
		t.Fatalf("GC with an empty list: %s", out.Stdout)
	}
	f.expectClean(before)
}

// D4 and C6: netns and host veths gone behind the plugin's back (a
// reboot); GC with an empty list still releases IPs, records and the host
// address, and new ADDs work.
func TestGCAfterReboot(t *testing.T) {
	f := newFixture(t)
	before := f.snapshot()
	r := f.runtime(f.conf("1.1.0"))
	rts := attachN(t, f, r, 5)
	for _, p := range f.made {
		if err := p.Delete(); err != nil {
			t.Fatal(err)
		}
	}
	out := f.exec(harness.Call{Command: "GC", Stdin: gcConf(f, nil)})
	if out.RC != 0 {
		t.Fatalf("GC after reboot: %s", out.Stdout)
	}
	f.expectClean(before)
	rt := rtConf(rts[0].ContainerID, f.pod(), "eth0")
	res, err := r.add(rt)
	if err != nil {
		t.Fatalf("ADD after GC: %v", err)
	}
	leases := countPrefix(f.snapshot().IPAM.Files, "vmnet/10.")
	if len(res.IPs) != 1 || leases != 1 {
		t.Errorf("after GC and one ADD: IPs %v, %d leases; want one of each", res.IPs, leases)
	}
}

// D7: disableGC in the conflist: libcni runs no GC at all.
func TestGCDisabled(t *testing.T) {
	f := newFixture(t)
	rec := f.recorder()
	r := f.runtime(f.conf("1.1.0", withRecorder))
	r.list.DisableGC = true
	rts := attachN(t, f, r, 2)
	if err := r.gc(&libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}); err != nil {
		t.Fatal(err)
	}
	for _, rt := range rts {
		if err := r.check(rt); err != nil {
			t.Errorf("%s torn down despite disableGC: %v", rt.ContainerID, err)
		}
	}
	for _, c := range rec.Calls() {
		if strings.HasPrefix(c, "GC") || strings.HasPrefix(c, "DEL") {
			t.Errorf("IPAM saw %q despite disableGC", c)
		}
	}
}
