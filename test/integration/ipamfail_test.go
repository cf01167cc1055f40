package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tapbridge/tapbridge-cni/internal/config"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// C4: IPAM fails in the middle of ADD. ADD returns IPAM's own code and
// message, the steps before IPAM are undone, IPAM DEL is called, and the
// node is CLEAN (the upstream tap plugin leaks here).
func TestIPAMFailure(t *testing.T) {
	t.Run("range exhausted", func(t *testing.T) {
		f := newFixture(t)
		pods := f.pods(2)
		conf := f.conf("1.1.0", ipRange("10.77.0.0/24", "10.77.0.10", "10.77.0.10"))
		before := f.snapshot()
		first := harness.Attachment{CID: "c4-first-" + f.node.ID, IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pods[0]}
		second := first
		second.CID, second.Pod = "c4-second-"+f.node.ID, pods[1]
		f.must(f.add(conf, first))
		withFirst := f.snapshot()
		// What host-local itself says for the second pod.
		ipamSays := f.exec(harness.Call{Command: "ADD", ContainerID: second.CID, Netns: pods[1].Path(), IfName: "net1", Stdin: conf,
			Binary: filepath.Join(harness.CNIBinDir(), "host-local")})
		if ipamSays.RC == 0 {
			t.Fatalf("host-local gave a second IP from a range of one: %s", ipamSays.Stdout)
		}
		out := f.exec(harness.Call{Command: "ADD", ContainerID: second.CID, Netns: pods[1].Path(), IfName: "net1", Stdin: conf})
		if out.RC == 0 || out.Err.Code != ipamSays.Err.Code || !strings.Contains(out.Err.Msg, ipamSays.Err.Msg) {
			t.Fatalf("ADD with the range exhausted: rc %d %s; host-local says code %d %q", out.RC, out.Stdout, ipamSays.Err.Code, ipamSays.Err.Msg)
		}
		if d := withFirst.Diff(f.snapshot()); d != "" {
			t.Fatalf("failed ADD left something behind:\n%s", d)
		}
		f.expectLive([]harness.Attachment{first}, pods)
		f.must(f.del(conf, first))
		f.expectClean(before)
	})
	t.Run("bogus type", func(t *testing.T) {
		f := newFixture(t)
		pod := f.pods(1)[0]
		conf := f.conf("1.1.0", set("ipam.type", "no-such-ipam"))
		before := f.snapshot()
		out := f.exec(harness.Call{Command: "ADD", ContainerID: "c4-bogus-" + f.node.ID, Netns: pod.Path(), IfName: "net1", Stdin: conf})
		// No IPAM ran, so there is no IPAM code to pass through: like the
		// upstream plugins (invoke.FindInPath), a missing binary is 999.
		if out.RC == 0 || out.Err.Code != types.ErrInternal || !strings.Contains(out.Err.Msg, `"no-such-ipam"`) {
			t.Fatalf("ADD with a missing IPAM plugin: rc %d %s", out.RC, out.Stdout)
		}
		f.expectLive(nil, []harness.Netns{pod})
		f.expectClean(before)
	})
	t.Run("ipam error", func(t *testing.T) {
		f := newFixture(t)
		pod := f.pods(1)[0]
		log := filepath.Join(t.TempDir(), "calls")
		stub := stubIPAM(t, "failing-ipam", fmt.Sprintf(`echo "$CNI_COMMAND $CNI_CONTAINERID" >> %s
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{"cniVersion":"1.1.0","code":111,"msg":"stub pool is empty","details":"stub details"}'
  exit 1
fi
exit 0
`, log))
		conf := f.conf("1.1.0", set("ipam.type", "failing-ipam"))
		before := f.snapshot()
		cid := "c4-stub-" + f.node.ID
		out := f.exec(harness.Call{Command: "ADD", ContainerID: cid, Netns: pod.Path(), IfName: "net1", Stdin: conf,
			Path: strings.Join(append([]string{stub}, f.paths(pluginDir)...), ":")})
		if out.RC == 0 || out.Err.Code != 111 || !strings.Contains(out.Err.Msg, "stub pool is empty") || out.Err.Details != "stub details" {
			t.Fatalf("ADD with a failing IPAM: rc %d %s, want IPAM's code 111, message and details", out.RC, out.Stdout)
		}
		calls, _ := os.ReadFile(log)
		if want := "ADD " + cid + "\nDEL " + cid + "\n"; string(calls) != want {
			t.Errorf("IPAM calls %q, want %q (the failed ADD must be released)", calls, want)
		}
		f.expectLive(nil, []harness.Netns{pod})
		f.expectClean(before)
	})
}

// C4, continued: an IPAM plugin that dies without a word (a crash). There
// is no IPAM code to pass through; ADD must still return a valid CNI
// error (999, never code 0) that says what happened, and leave the node
// CLEAN.
func TestIPAMCrash(t *testing.T) {
	f := newFixture(t)
	pod := f.pods(1)[0]
	stub := stubIPAM(t, "crashing-ipam", `[ "$CNI_COMMAND" = ADD ] && kill -SEGV $$
exit 0
`)
	conf := f.conf("1.1.0", set("ipam.type", "crashing-ipam"))
	before := f.snapshot()
	out := f.exec(harness.Call{Command: "ADD", ContainerID: "c4-crash-" + f.node.ID, Netns: pod.Path(), IfName: "net1", Stdin: conf,
		Path: strings.Join(append([]string{stub}, f.paths(pluginDir)...), ":")})
	if out.RC == 0 || out.Err.Code != types.ErrInternal || !strings.Contains(out.Err.Msg, "crashing-ipam") {
		t.Fatalf("ADD with a crashing IPAM: rc %d %s, want code 999 naming the IPAM", out.RC, out.Stdout)
	}
	f.expectLive(nil, []harness.Netns{pod})
	f.expectClean(before)
}

// C5: an IPAM plugin that never answers. ADD gives up after ipamTimeout
// with 11 (try again later), kills it, releases, and leaves the node CLEAN.
// The stub sleeps in a child process, as a real plugin's helper would, so
// the IPAM's stdout stays open after the IPAM itself is killed.
func TestIPAMTimeout(t *testing.T) {
	f := newFixture(t)
	pod := f.pods(1)[0]
	pids := filepath.Join(t.TempDir(), "pids")
	stub := stubIPAM(t, "hung-ipam", fmt.Sprintf(`if [ "$CNI_COMMAND" = ADD ]; then
  sleep 3600 &
  echo $! >> %s
  wait
fi
exit 0
`, pids))
	t.Cleanup(func() { killRecorded(t, pids) })
	conf := f.conf("1.1.0", set("ipam.type", "hung-ipam"), set("ipamTimeout", "2s"))
	before := f.snapshot()
	begin := time.Now()
	p, err := f.start(harness.Call{Command: "ADD", ContainerID: "c5-" + f.node.ID, Netns: pod.Path(), IfName: "net1", Stdin: conf,
		Path: strings.Join(append([]string{stub}, f.paths(pluginDir)...), ":")})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-done
		t.Fatalf("ADD with a hung IPAM and ipamTimeout 2s had not returned after 20s (killed)")
	}
	took := time.Since(begin)
	out := harness.Outcome{RC: p.Cmd.ProcessState.ExitCode(), Stdout: p.Stdout.Bytes()}
	var cniErr types.Error
	if out.RC == 0 || decodeCNIError(out.Stdout, &cniErr) != nil || cniErr.Code != types.ErrTryAgainLater {
		t.Fatalf("ADD with a hung IPAM: rc %d %s, want code 11", out.RC, out.Stdout)
	}
	// At least the configured 2s, and (the 20s limit above) far less than
	// the default: no upper bound tighter than that, which a loaded
	// machine could break.
	if took < 2*time.Second || took >= config.DefaultIPAMTimeout {
		t.Errorf("ADD returned after %s, want the 2s ipamTimeout (not the %s default)", took, config.DefaultIPAMTimeout)
	}
	f.expectLive(nil, []harness.Netns{pod})
	f.expectClean(before)
	t.Logf("hung IPAM: code %d after %s: %s", cniErr.Code, took.Round(time.Millisecond), cniErr.Msg)
}

// killRecorded kills the processes whose PIDs a stub recorded (ours:
// the stub's sleep) and that still run.
func killRecorded(t *testing.T, file string) {
	data, _ := os.ReadFile(file)
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
}
