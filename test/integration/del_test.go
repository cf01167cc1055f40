package integration

import (
	"strings"
	"testing"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// A2: DEL of an attachment that never existed succeeds and changes nothing.
func TestDelWithoutAdd(t *testing.T) {
	f := newFixture(t)
	pod := f.pod()
	rec := f.recorder()
	before := f.snapshot()
	out := f.exec(harness.Call{Command: "DEL", ContainerID: "never-added", Netns: pod.Path(), IfName: "eth0", Stdin: f.conf("1.1.0", withRecorder)})
	if out.RC != 0 || len(out.Stdout) != 0 {
		t.Fatalf("DEL without ADD: rc %d stdout %q", out.RC, out.Stdout)
	}
	f.expectClean(before)
	if calls := rec.Calls(); len(calls) != 1 || !strings.HasPrefix(calls[0], "DEL never-added eth0") {
		t.Errorf("IPAM calls = %q, want one DEL", calls)
	}
}

// A3: DEL with CNI_NETNS unset still removes everything (the record knows
// the netns), releases the IP and the host address.
func TestDelWithoutNetns(t *testing.T) {
	f := newFixture(t)
	pod := f.pod()
	before := f.snapshot()
	conf := f.conf("1.1.0")
	add := f.exec(harness.Call{Command: "ADD", ContainerID: "cid-a3", Netns: pod.Path(), IfName: "eth0", Stdin: conf})
	if add.RC != 0 {
		t.Fatalf("ADD: %s", add.Stdout)
	}
	del := f.exec(harness.Call{Command: "DEL", ContainerID: "cid-a3", IfName: "eth0", Stdin: conf})
	if del.RC != 0 {
		t.Fatalf("DEL without CNI_NETNS: %s", del.Stdout)
	}
	f.expectClean(before)
}

// A4: DEL after the pod netns was deleted.
func TestDelAfterNetnsGone(t *testing.T) {
	f := newFixture(t)
	pod := f.pod()
	before := f.snapshot()
	r := f.runtime(f.conf("1.1.0"))
	rt := rtConf("cid-a4", pod, "eth0")
	if _, err := r.add(rt); err != nil {
		t.Fatal(err)
	}
	if err := pod.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := r.del(rt); err != nil {
		t.Fatalf("DEL after netns deletion: %v", err)
	}
	f.expectClean(before)
}

// A6: a second ADD of a live attachment fails and leaves the first intact.
func TestAddTwice(t *testing.T) {
	for _, ver := range []string{"0.4.0", "1.1.0"} {
		t.Run(ver, func(t *testing.T) {
			f := newFixture(t)
			pod := f.pod()
			r := f.runtime(f.conf(ver))
			rt := rtConf("cid-a6", pod, "eth0")
			if _, err := r.add(rt); err != nil {
				t.Fatal(err)
			}
			after1 := f.snapshot()
			out := f.exec(harness.Call{Command: "ADD", ContainerID: "cid-a6", Netns: pod.Path(), IfName: "eth0", Stdin: f.conf(ver)})
			if out.RC == 0 || out.Err.Code != 100 || !strings.Contains(out.Err.Msg, "cid-a6") {
				t.Fatalf("second ADD: rc %d %s", out.RC, out.Stdout)
			}
			if d := after1.Diff(f.snapshot()); d != "" {
				t.Errorf("second ADD changed the node:\n%s", d)
			}
			if err := r.check(rt); err != nil {
				t.Errorf("first attachment broken by the second ADD: %v", err)
			}
		})
	}
}

// A7: one container, two ifnames: independent attachments sharing the
// host address.
func TestTwoIfNames(t *testing.T) {
	f := newFixture(t)
	pod := f.pod()
	before := f.snapshot()
	r := f.runtime(f.conf("1.1.0"))
	rt0, rt1 := rtConf("cid-a7", pod, "tap0"), rtConf("cid-a7", pod, "tap1")
	res0, err := r.add(rt0)
	if err != nil {
		t.Fatal(err)
	}
	res1, err := r.add(rt1)
	if err != nil {
		t.Fatal(err)
	}
	if res0.Interfaces[0].Name == res1.Interfaces[0].Name || res0.Interfaces[1].Name == res1.Interfaces[1].Name {
		t.Fatalf("names collide: %v %v", res0.Interfaces, res1.Interfaces)
	}
	if err := r.del(rt0); err != nil {
		t.Fatal(err)
	}
	if err := r.check(rt1); err != nil {
		t.Fatalf("tap1 broken by deleting tap0: %v", err)
	}
	f.expectBridgeAddr("10.77.0.250/24", true)
	if err := r.del(rt1); err != nil {
		t.Fatal(err)
	}
	f.expectClean(before)
}
