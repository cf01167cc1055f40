package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/tapbridge/tapbridge-cni/internal/plugin"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// C1: a failpoint after each ADD step. ":error" makes ADD fail, and the
// node is CLEAN with no DEL (the undo ran, IPAM DEL included). ":exit" is
// a crash: the record is there for DEL and GC to find, one DEL gives
// CLEAN. Either way the same ADD then succeeds, and DEL gives CLEAN.
func TestFailpoints(t *testing.T) {
	for _, step := range plugin.AddSteps() {
		for _, mode := range []string{"error", "exit"} {
			t.Run(step+":"+mode, func(t *testing.T) {
				f := newFixture(t)
				pod := f.pods(1)[0]
				conf := f.conf("1.1.0")
				before := f.snapshot()
				a := harness.Attachment{CID: "c1-" + f.node.ID, IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pod}
				fp := "TAPBRIDGE_FAILPOINT=" + step + ":" + mode
				call := harness.Call{Command: "ADD", ContainerID: a.CID, Netns: pod.Path(), IfName: a.IfName, Stdin: conf, Binary: failpointsBin()}
				if mode == "error" {
					call.Extra = []string{fp}
					out := f.exec(call)
					if out.RC == 0 || !strings.Contains(out.Err.Msg, "failpoint "+step) {
						t.Fatalf("ADD with %s: rc %d %s", fp, out.RC, out.Stdout)
					}
				} else {
					p, err := f.start(call, fp)
					if err != nil {
						t.Fatal(err)
					}
					rc, err := p.Wait(30 * time.Second)
					if err != nil || rc != 137 {
						t.Fatalf("ADD with %s: rc %d, %v, stdout %q", fp, rc, err, p.Stdout.Bytes())
					}
					waitIPAMOrphan(t, a.CID)
					if err := f.stateSane(); err != nil {
						t.Fatal(err)
					}
					if _, ok := f.read(nil).StateDir.Records[a.Names().Key]; !ok {
						t.Fatalf("crash after step %s left no record for DEL and GC to find", step)
					}
					f.must(f.del(conf, a))
				}
				f.expectLive(nil, []harness.Netns{pod})
				f.expectClean(before)
				f.must(f.add(conf, a))
				f.expectLive([]harness.Attachment{a}, nil)
				f.must(f.del(conf, a))
				f.expectClean(before)
			})
		}
	}
}

// C3: after a crash at any step, the runtime retries ADD without a DEL.
// The retry fails cleanly (the attachment is known: code 100) and changes
// nothing, so there are never two IPs or two host veths; then one DEL
// gives CLEAN.
func TestRetryAfterCrash(t *testing.T) {
	for _, step := range plugin.AddSteps() {
		t.Run(step, func(t *testing.T) {
			f := newFixture(t)
			pod := f.pods(1)[0]
			conf := f.conf("1.1.0")
			before := f.snapshot()
			a := harness.Attachment{CID: "c3-" + f.node.ID, IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pod}
			p, err := f.start(harness.Call{Command: "ADD", ContainerID: a.CID, Netns: pod.Path(), IfName: a.IfName, Stdin: conf, Binary: failpointsBin()},
				"TAPBRIDGE_FAILPOINT="+step+":exit")
			if err != nil {
				t.Fatal(err)
			}
			if rc, err := p.Wait(30 * time.Second); err != nil || rc != 137 {
				t.Fatalf("crash at %s: rc %d %v", step, rc, err)
			}
			waitIPAMOrphan(t, a.CID)
			crashed := f.snapshot()
			out, err := f.add(conf, a)
			if err != nil {
				t.Fatal(err)
			}
			if out.RC == 0 || out.Err.Code != 100 {
				t.Fatalf("retried ADD: rc %d %s, want code 100 (attachment exists)", out.RC, out.Stdout)
			}
			if d := crashed.Diff(f.snapshot()); d != "" {
				t.Fatalf("the refused retry changed the node:\n%s", d)
			}
			f.must(f.del(conf, a))
			f.expectLive(nil, []harness.Netns{pod})
			f.expectClean(before)
		})
	}
}

// waitIPAMOrphan waits until no process of the attachment's IPAM ADD is
// left. IPAM runs alongside the pod-side steps, so a crash in one of them
// leaves the IPAM plugin to finish on its own, as any crash during IPAM
// always did; a snapshot taken before it ends would race it.
func waitIPAMOrphan(t *testing.T, cid string) {
	t.Helper()
	if err := harness.WaitContainerGone(cid, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}
