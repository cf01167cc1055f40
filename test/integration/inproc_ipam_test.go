package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
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
