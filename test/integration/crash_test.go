package integration

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

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
	if took < 2*time.Second || took > 5*time.Second {
		t.Errorf("ADD returned after %s, want about the 2s ipamTimeout", took)
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

// C6: a reboot in miniature. After N ADDs every pod netns and host veth
// vanishes behind the plugin's back; state and IPAM dirs stay. GC with an
// empty valid list (from a runtime whose cache is gone, so libcni sends
// no DEL first) removes every record, lease and host address, and the
// next N ADDs get IPs from a range of exactly N.
func TestGCAfterPodsVanish(t *testing.T) {
	f := newFixture(t)
	const n = 6
	pods := f.pods(n)
	conf := f.conf("1.1.0", ipRange("10.77.0.0/24", "10.77.0.10", "10.77.0.15"))
	before := f.snapshot()
	r := f.runtime(conf)
	var atts []harness.Attachment
	for i, p := range pods {
		a := harness.Attachment{CID: fmt.Sprintf("c6-%s-%d", f.node.ID, i), IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: p}
		if _, err := r.add(rtConf(a.CID, p, a.IfName)); err != nil {
			t.Fatal(err)
		}
		atts = append(atts, a)
	}
	f.expectLive(atts, pods)
	for _, p := range pods {
		if err := p.Delete(); err != nil {
			t.Fatal(err)
		}
	}
	err := f.node.Host.Do(func() error {
		for _, a := range atts {
			// The kernel tears the pair down asynchronously once the pod
			// netns is gone, so the link may vanish under our feet.
			if l, err := netlink.LinkByName(a.Names().HostIf); err == nil {
				if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	fresh := &runtime{f: f, list: r.list,
		cni: libcni.NewCNIConfigWithCacheDir(f.paths(pluginDir), filepath.Join(f.dir, "cache-after-reboot"), nil)}
	if err := fresh.gc(&libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	f.expectLive(nil, nil)
	f.expectClean(before)
	newPods := f.pods(n)
	for i, p := range newPods {
		a := harness.Attachment{CID: fmt.Sprintf("c6-after-%s-%d", f.node.ID, i), IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: p}
		f.must(f.add(conf, a))
		atts[i] = a
	}
	f.expectLive(atts, newPods)
	for _, a := range atts {
		f.must(f.del(conf, a))
	}
	f.expectClean(before)
}

// killBudget bounds the SIGKILL test: ~25 s in `make test`, longer with
// TAPBRIDGE_KILL_TIME (e.g. "5m").
func killBudget(t *testing.T) time.Duration {
	if s := os.Getenv("TAPBRIDGE_KILL_TIME"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("TAPBRIDGE_KILL_TIME=%q: %v", s, err)
		}
		return d
	}
	if testing.Short() {
		return 5 * time.Second
	}
	return 25 * time.Second
}

// SIGKILL at a random moment (0-30 ms in) of ADD or DEL, hundreds of
// times, on two nodes at once. Right after each kill every state file parses, there is no
// *.tmp and no lock is held; half the killed ADDs are retried without a
// DEL first (C3: rc 0 or 100, never a second IP or host veth); then one
// DEL gives CLEAN.
func TestKill(t *testing.T) {
	// Two nodes side by side: twice the kills in the same time on 2 cores.
	for i := 0; i < 2; i++ {
		t.Run(fmt.Sprintf("node%d", i), func(t *testing.T) {
			t.Parallel()
			killLoop(t)
		})
	}
}

func killLoop(t *testing.T) {
	f := newFixture(t)
	pod := f.pods(1)[0]
	conf := f.conf("1.1.0")
	before := f.snapshot()
	budget := killBudget(t)
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	count := map[string]int{}
	start := time.Now()
	for i := 0; time.Since(start) < budget; i++ {
		a := harness.Attachment{CID: fmt.Sprintf("kill-%s-%d", f.node.ID, i), IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pod}
		verb := "ADD"
		if i%3 == 2 {
			verb = "DEL"
			f.must(f.add(conf, a))
		}
		p, err := f.start(harness.Call{Command: verb, ContainerID: a.CID, Netns: pod.Path(), IfName: a.IfName, Stdin: conf})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rnd.IntN(30_000)) * time.Microsecond)
		killed, err := p.Kill()
		if err != nil {
			t.Fatal(err)
		}
		if killed {
			count[verb+" killed"]++
		} else {
			count[verb+" finished first"]++
		}
		if err := f.stateSane(); err != nil {
			t.Fatalf("iteration %d, %s killed=%v: %v", i, verb, killed, err)
		}
		if verb == "ADD" && killed && rnd.IntN(2) == 0 {
			count["ADD retried"]++
			f.retryAfterKill(conf, a)
		}
		out, err := f.del(conf, a)
		if err := succeeded(out, err); err != nil {
			t.Fatalf("iteration %d: DEL after %s killed=%v: %v", i, verb, killed, err)
		}
		if err := f.liveErr(nil, []harness.Netns{pod}); err != nil {
			t.Fatalf("iteration %d: one DEL after %s killed=%v: %v", i, verb, killed, err)
		}
		f.expectClean(before)
		if t.Failed() {
			t.Fatalf("iteration %d: one DEL after %s killed=%v did not give CLEAN", i, verb, killed)
		}
		count["iterations"]++
	}
	t.Logf("%s of SIGKILLs: %v", budget, count)
	if count["ADD killed"] == 0 || count["DEL killed"] == 0 {
		t.Errorf("no ADD or no DEL was killed while running: %v", count)
	}
}

// retryAfterKill is C3 after a SIGKILL: the retry succeeds (nothing was
// recorded yet) or fails with 100, and the node never holds two IPs or
// two host veths for the attachment.
func (f *fixture) retryAfterKill(conf []byte, a harness.Attachment) {
	f.t.Helper()
	out, err := f.add(conf, a)
	if err != nil {
		f.t.Fatal(err)
	}
	if out.RC != 0 && out.Err.Code != 100 {
		f.t.Fatalf("ADD retried after a kill: rc %d %s, want 0 or code 100", out.RC, out.Stdout)
	}
	s := f.read(nil)
	ips := s.IPAM.Of(a.CID)
	if ips > 1 || (out.RC == 0 && ips != 1) {
		f.t.Fatalf("after the retried ADD (rc %d) IPAM holds %d IPs for %s", out.RC, ips, a.CID)
	}
	var links []string
	for _, l := range s.Host.Links {
		if strings.HasPrefix(l.Name, "tb") {
			links = append(links, l.Name)
		}
	}
	if len(links) > 1 || (out.RC == 0 && len(links) != 1) {
		f.t.Fatalf("after the retried ADD (rc %d) the host has veths %v", out.RC, links)
	}
	if out.RC == 0 {
		f.expectLive([]harness.Attachment{a}, nil)
	}
}

// A DEL killed inside the host-address release, after it emptied the
// subnet's users but before it removed the address (a state the SIGKILL
// test reaches at random), is finished by the retried DEL: the address
// goes. Built here by hand, so the case is always covered.
func TestDelFinishesInterruptedRelease(t *testing.T) {
	f := newFixture(t)
	pod := f.pods(1)[0]
	conf := f.conf("1.1.0")
	before := f.snapshot()
	a := harness.Attachment{CID: "c-rel-" + f.node.ID, IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pod}
	f.must(f.add(conf, a))
	if err := harness.DropUser(f.stateDir(), harness.BridgeName, netip.MustParsePrefix("10.77.0.0/24"), a.Names().Key); err != nil {
		t.Fatal(err)
	}
	f.must(f.del(conf, a))
	f.expectLive(nil, []harness.Netns{pod})
	f.expectClean(before)
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
