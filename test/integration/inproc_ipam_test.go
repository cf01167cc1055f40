package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// ipamRun is what one mode (exec'd or in-process host-local) gave.
type ipamRun struct {
	results []string          // each ADD's IPs, as JSON
	store   map[string]string // the IPAM dir's files and contents
	errs    []string          // each failed call's code and message
}

// runIPAMScenario plays the same calls through the plugin on a fresh
// node, with host-local exec'd or in process, and ends clean.
func runIPAMScenario(t *testing.T, exec bool) ipamRun {
	f := newFixture(t)
	before := f.snapshot()
	mode := set("ipamExec", exec)
	dual := set("ipam.ranges", [][]map[string]any{
		{{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.10", "rangeEnd": "10.77.0.11"}},
		{{"subnet": "fd77::/64", "rangeStart": "fd77::10", "rangeEnd": "fd77::20"}},
	})
	host := set("hostAddress.static", map[string]any{"node-a": []string{"10.77.0.250/24", "fd77::250/64"}})
	plain := f.runtime(f.conf("1.1.0", mode, dual, host))
	asked := f.runtime(f.conf("1.1.0", mode, dual, host, set("args.cni.ips", []string{"10.77.0.11"})))
	var run ipamRun
	note := func(err error) {
		if err != nil {
			run.errs = append(run.errs, err.Error())
		}
	}
	add := func(r *runtime, rt *libcni.RuntimeConf) {
		res, err := r.add(rt)
		note(err)
		if err == nil {
			b, _ := json.Marshal(res.IPs)
			run.results = append(run.results, string(b))
		}
	}
	a, b := rtConf("cid-ipam-a", f.pod(), "eth0"), rtConf("cid-ipam-b", f.pod(), "eth0")
	add(plain, a)
	add(asked, b)
	add(plain, rtConf("cid-ipam-c", f.pod(), "eth0")) // the IPv4 range is used up
	note(plain.check(a))
	note(plain.del(a))
	add(plain, rtConf("cid-ipam-d", f.pod(), "eth0"))
	run.store = harness.Files(t, f.ipamDir())
	// GC with only b valid: tapbridge releases d's lease itself.
	note(plain.gc(&libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: b.ContainerID, IfName: b.IfName}}}))
	for k, v := range harness.Files(t, f.ipamDir()) {
		run.store["after GC: "+k] = v
	}
	note(plain.del(b))
	f.expectClean(before)
	return run
}

// The plugin with host-local in process gives what it gives with the
// binary exec'd: the same addresses, the same failures, the same files
// in the store; and GC leaves both clean.
func TestInProcessIPAMMatchesExec(t *testing.T) {
	byExec := runIPAMScenario(t, true)
	inProc := runIPAMScenario(t, false)
	if len(byExec.results) != 3 || len(byExec.errs) != 1 || !strings.Contains(byExec.errs[0], "no IP addresses available") {
		t.Fatalf("the scenario did not go as planned with the binary: %+v", byExec)
	}
	if fmt.Sprint(byExec.results) != fmt.Sprint(inProc.results) {
		t.Errorf("results differ:\n exec:       %v\n in process: %v", byExec.results, inProc.results)
	}
	// Messages differ by the node's unique names only where they name them.
	if len(byExec.errs) != len(inProc.errs) || stripIDs(byExec.errs[0]) != stripIDs(inProc.errs[0]) {
		t.Errorf("errors differ:\n exec:       %q\n in process: %q", byExec.errs, inProc.errs)
	}
	if fmt.Sprint(byExec.store) != fmt.Sprint(inProc.store) {
		t.Errorf("stores differ:\n exec:       %v\n in process: %v", byExec.store, inProc.store)
	}
}

func stripIDs(s string) string {
	if i := strings.Index(s, "IPAM host-local"); i >= 0 {
		return s[i:]
	}
	return s
}

// A quick measure, not a benchmark (set TAPBRIDGE_IPAM_TIMING=1): 50
// ADD+DEL through the plugin each way, the modes alternating; logs the
// ratio and fails if in process is not faster.
func TestInProcessIPAMTiming(t *testing.T) {
	if os.Getenv("TAPBRIDGE_IPAM_TIMING") == "" {
		t.Skip("a measurement, run on demand: TAPBRIDGE_IPAM_TIMING=1")
	}
	f := newFixture(t)
	pods := f.pods(2)
	runtimes := map[bool]*runtime{}
	for _, exec := range []bool{true, false} {
		runtimes[exec] = f.runtime(f.conf("1.1.0", set("ipamExec", exec)))
	}
	took := map[bool]time.Duration{}
	for i := range 50 {
		for _, exec := range []bool{true, false} {
			rt := rtConf(fmt.Sprintf("cid-time-%v-%d", exec, i), pods[map[bool]int{true: 0, false: 1}[exec]], "eth0")
			start := time.Now()
			if _, err := runtimes[exec].add(rt); err != nil {
				t.Fatal(err)
			}
			if err := runtimes[exec].del(rt); err != nil {
				t.Fatal(err)
			}
			took[exec] += time.Since(start)
		}
	}
	ratio := float64(took[false]) / float64(took[true])
	t.Logf("50 ADD+DEL: exec'd host-local %s, in process %s: in process takes %.2fx the time", took[true], took[false], ratio)
	if ratio >= 1 {
		t.Errorf("in-process IPAM is not faster")
	}
	_ = harness.BridgeName
}

// The plugin tells in-process host-local what it knows (a fresh claim on
// ADD; on DEL and GC, the complete record's addresses), so ADD, DEL and
// GC read no lease but the attachment's own: their cost does not grow
// with the node's attachments (DESIGN.md). A FIFO named like an address
// sits in the store: a call that reads every lease blocks on it until
// the test gives it EOF, which fails the test.
func TestInProcessIPAMReadsNoOtherLease(t *testing.T) {
	f := newFixture(t)
	pods := f.pods(2)
	conf := f.conf("1.1.0")
	r := f.runtime(conf)
	before := f.snapshot()
	// The network's store exists once an ADD made it.
	warm := rtConf("cid-fifo-warm", pods[0], "eth0")
	if _, err := r.add(warm); err != nil {
		t.Fatal(err)
	}
	if err := r.del(warm); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(f.ipamDir(), "vmnet", "10.77.0.199")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(fifo) })
	noWalk := func(what string, fn func() error) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- fn() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			return
		case <-time.After(10 * time.Second):
		}
		// Give every read of the FIFO EOF until the call is done: a writer
		// that comes and goes ends a blocked read (with no reader the open
		// fails, ENXIO).
		for {
			select {
			case <-done:
				t.Fatalf("%s read every lease of the store (it blocked on the FIFO)", what)
			default:
			}
			if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	a, b := rtConf("cid-fifo-a", pods[0], "eth0"), rtConf("cid-fifo-b", pods[1], "eth0")
	noWalk("ADD a", func() error { _, err := r.add(a); return err })
	noWalk("ADD b", func() error { _, err := r.add(b); return err })
	noWalk("DEL a", func() error { return r.del(a) })
	noWalk("GC with a valid", func() error {
		return r.gc(&libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: a.ContainerID, IfName: a.IfName}}})
	})
	if err := os.Remove(fifo); err != nil {
		t.Fatal(err)
	}
	f.expectClean(before) // b's lease went with GC, a's with DEL
}

// When IPAM gave a lease, ADD then failed, and IPAM DEL fails in the
// undo, the claim stays: the addresses IPAM still holds are the runtime's
// DEL's to release, and in-process host-local is told an ADD's attachment
// is fresh only because a record never goes before its addresses do.
func TestIPAMDelFailsInUndo(t *testing.T) {
	f := newFixture(t)
	pod := f.pods(1)[0]
	dir := t.TempDir()
	// The lease is on a subnet the node has no host address for (the
	// config has one on 10.77.0.0/24 only), so ADD fails after it.
	stub := stubIPAM(t, "stuck-ipam", fmt.Sprintf(`case "$CNI_COMMAND" in
ADD) echo '{"cniVersion":"1.1.0","ips":[{"address":"10.99.0.5/24"}]}';;
DEL) [ -e %s/released ] && exit 0
     echo '{"cniVersion":"1.1.0","code":11,"msg":"stub cannot release now"}'; exit 1;;
esac
exit 0
`, dir))
	conf := f.conf("1.1.0", set("ipam.type", "stuck-ipam"))
	before := f.snapshot()
	call := harness.Call{Command: "ADD", ContainerID: "c-stuck-" + f.node.ID, Netns: pod.Path(), IfName: "net1", Stdin: conf,
		Path: strings.Join(append([]string{stub}, f.paths(pluginDir)...), ":")}
	out := f.exec(call)
	if out.RC == 0 || !strings.Contains(out.Err.Msg, "10.99.0.0/24") || !strings.Contains(out.Err.Msg, "stub cannot release now") || !strings.Contains(out.Err.Msg, "kept") {
		t.Fatalf("ADD that fails after its lease, whose IPAM then fails DEL: rc %d %s, want the host-address failure, the failed release and the kept claim", out.RC, out.Stdout)
	}
	recs, err := os.ReadDir(filepath.Join(f.stateDir(), "attachments"))
	if err != nil || len(recs) != 1 {
		t.Fatalf("records after the failed ADD: %v %v, want the claim kept", recs, err)
	}
	call.Command = "DEL"
	if out := f.exec(call); out.RC == 0 {
		t.Fatalf("DEL while IPAM cannot release succeeded: the record would go with the addresses still held")
	}
	if err := os.WriteFile(filepath.Join(dir, "released"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := f.exec(call); out.RC != 0 {
		t.Fatalf("DEL once IPAM can release: rc %d %s", out.RC, out.Stdout)
	}
	f.expectLive(nil, []harness.Netns{pod})
	f.expectClean(before)
}
