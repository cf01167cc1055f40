package integration

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/internal/config"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// B1/B2: N parallel ADDs of one network (one bridge, one subnet), then N
// parallel DELs. Every call succeeds, IPs and host veths are unique, the
// bridge has exactly one host address on the subnet whenever (under the
// bridge lock) the subnet has users, and the node ends CLEAN.
func TestParallelAddDel(t *testing.T) {
	for _, n := range []int{64, 256} {
		t.Run(fmt.Sprint(n), func(t *testing.T) { parallelAddDel(t, n) })
	}
}

func parallelAddDel(t *testing.T, n int) {
	f := newFixture(t)
	pods := f.pods(n)
	const hostAddr = "10.80.3.254/22"
	conf := f.conf("1.1.0", ipRange("10.80.0.0/22", "10.80.0.10", "10.80.3.250"), staticHostAddrs(hostAddr))
	before := f.snapshot()
	atts := make([]harness.Attachment, n)
	for i, cid := range containerIDs("b1-"+f.node.ID, n) {
		atts[i] = harness.Attachment{CID: cid, IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: hostAddr, Pod: pods[i]}
	}
	stop := f.watchHostAddrs(harness.BridgeName, hostAddr)
	outs := make([]harness.Outcome, n)
	begin := time.Now()
	errs := inParallel(n, func(i int) error {
		var err error
		outs[i], err = f.add(conf, atts[i])
		return succeeded(outs[i], err)
	})
	addTime := time.Since(begin)
	failOn(t, "ADD", errs)
	ips, hosts := map[string]string{}, map[string]string{}
	for i, out := range outs {
		ip := resultIP(t, out.Stdout)
		var res struct{ Interfaces []struct{ Name string } }
		_ = json.Unmarshal(out.Stdout, &res)
		host := res.Interfaces[0].Name
		if other, dup := ips[ip]; dup {
			t.Errorf("IP %s given to %s and %s", ip, other, atts[i].CID)
		}
		if other, dup := hosts[host]; dup {
			t.Errorf("host veth %s made for %s and %s", host, other, atts[i].CID)
		}
		ips[ip], hosts[host] = atts[i].CID, atts[i].CID
	}
	samples, violations := stop() // expectLive checks that nobody holds the lock
	f.expectLive(atts, pods)
	stop = f.watchHostAddrs(harness.BridgeName, hostAddr)
	begin = time.Now()
	errs = inParallel(n, func(i int) error {
		out, err := f.del(conf, atts[i])
		if err == nil && len(out.Stdout) != 0 {
			err = fmt.Errorf("DEL printed %q", out.Stdout)
		}
		return succeeded(out, err)
	})
	delTime := time.Since(begin)
	failOn(t, "DEL", errs)
	delSamples, delViolations := stop()
	for _, v := range append(violations, delViolations...) {
		t.Error(v)
	}
	if samples == 0 || delSamples == 0 {
		t.Errorf("the host-address watcher took %d samples during the ADDs, %d during the DELs", samples, delSamples)
	}
	samples += delSamples
	f.expectLive(nil, pods)
	f.expectClean(before)
	t.Logf("%d parallel ADDs in %s, %d parallel DELs in %s, %d counted samples of the host address", n, addTime.Round(time.Millisecond), n, delTime.Round(time.Millisecond), samples)
}

// network is one network of a multi-network test.
type network struct {
	name, bridge, hostAddr string
	conf                   []byte
}

func (n network) att(cid, ifname string, pod harness.Netns) harness.Attachment {
	return harness.Attachment{CID: cid, IfName: ifname, Network: n.name, Bridge: n.bridge, HostAddr: n.hostAddr, Pod: pod}
}

// B5: three subnets on one bridge, 20 pods each, all ADDs in parallel:
// three host addresses; deleting every pod of one subnet removes that
// subnet's address only.
func TestSubnetsOnOneBridge(t *testing.T) {
	f := newFixture(t)
	static := []string{"10.81.0.250/24", "10.82.0.250/24", "10.83.0.250/24"}
	var nets []network
	for i, name := range []string{"vmnet-a", "vmnet-b", "vmnet-c"} {
		subnet := fmt.Sprintf("10.%d.0", 81+i)
		conf := f.conf("1.1.0", set("name", name), ipRange(subnet+".0/24", subnet+".10", subnet+".200"), staticHostAddrs(static...))
		nets = append(nets, network{name: name, bridge: harness.BridgeName, hostAddr: static[i], conf: conf})
	}
	const perNet = 20
	pods := f.pods(3 * perNet)
	before := f.snapshot()
	atts := make([]harness.Attachment, len(pods))
	for i := range atts {
		atts[i] = nets[i%3].att(fmt.Sprintf("b5-%s-%02d", f.node.ID, i), "net1", pods[i])
	}
	stop := f.watchHostAddrs(harness.BridgeName, static...)
	failOn(t, "ADD", inParallel(len(atts), func(i int) error { return succeeded(f.add(nets[i%3].conf, atts[i])) }))
	samples, violations := stop() // expectLive checks that nobody holds the lock
	f.expectLive(atts, pods)
	stop = f.watchHostAddrs(harness.BridgeName, static...)

	var gone, kept []harness.Attachment
	var keptConf [][]byte
	for i, a := range atts {
		if i%3 == 1 {
			gone = append(gone, a)
		} else {
			kept, keptConf = append(kept, a), append(keptConf, nets[i%3].conf)
		}
	}
	failOn(t, "DEL", inParallel(len(gone), func(i int) error { return succeeded(f.del(nets[1].conf, gone[i])) }))
	n, v := stop()
	samples, violations = samples+n, append(violations, v...)
	f.expectLive(kept, pods) // only 10.82.0.250/24 is gone
	stop = f.watchHostAddrs(harness.BridgeName, static...)
	failOn(t, "DEL", inParallel(len(kept), func(i int) error { return succeeded(f.del(keptConf[i], kept[i])) }))
	n, v = stop()
	samples, violations = samples+n, append(violations, v...)
	for _, v := range violations {
		t.Error(v)
	}
	f.expectLive(nil, pods)
	f.expectClean(before)
	if samples == 0 {
		t.Error("the host-address watcher took no sample: it checked nothing")
	}
	t.Logf("%d counted samples of the host addresses", samples)
}

// B6: two networks (different names, disjoint host-local ranges) on the
// same subnet and bridge. The host address is counted per (bridge,
// subnet) across networks: it stays while either network has pods, and a
// GC of one network (empty valid list) leaves the other's users alone.
func TestSameSubnetTwoNetworks(t *testing.T) {
	f := newFixture(t)
	const hostAddr = "10.77.0.250/24"
	x := network{name: "vmnet-x", bridge: harness.BridgeName, hostAddr: hostAddr,
		conf: f.conf("1.1.0", set("name", "vmnet-x"), ipRange("10.77.0.0/24", "10.77.0.10", "10.77.0.100"))}
	y := network{name: "vmnet-y", bridge: harness.BridgeName, hostAddr: hostAddr,
		conf: f.conf("1.1.0", set("name", "vmnet-y"), ipRange("10.77.0.0/24", "10.77.0.101", "10.77.0.200"))}
	pods := f.pods(6)
	before := f.snapshot()
	var xs, ys []harness.Attachment
	ips := map[string]bool{}
	for i, p := range pods {
		n, list := x, &xs
		if i%2 == 1 {
			n, list = y, &ys
		}
		a := n.att(fmt.Sprintf("b6-%s-%d", f.node.ID, i), "net1", p)
		out := f.exec(harness.Call{Command: "ADD", ContainerID: a.CID, Netns: p.Path(), IfName: a.IfName, Stdin: n.conf})
		if out.RC != 0 {
			t.Fatalf("ADD %s: %s", a.CID, out.Stdout)
		}
		ip := resultIP(t, out.Stdout)
		if ips[ip] {
			t.Errorf("IP %s given twice across the networks", ip)
		}
		ips[ip] = true
		*list = append(*list, a)
	}
	f.expectLive(append(append([]harness.Attachment{}, xs...), ys...), pods)

	// DEL every pod of x: y still needs the address.
	for _, a := range xs {
		f.must(f.del(x.conf, a))
	}
	f.expectLive(ys, pods)

	// ADD x again, then GC x with an empty list: x's pods go, y's stay.
	xs = []harness.Attachment{x.att("b6-again-"+f.node.ID, "net1", pods[0])}
	f.must(f.add(x.conf, xs[0]))
	gc := f.conf("1.1.0", set("name", "vmnet-x"), ipRange("10.77.0.0/24", "10.77.0.10", "10.77.0.100"),
		validAttachments(nil))
	f.must(f.call(harness.Call{Command: "GC", Stdin: gc}))
	f.expectLive(ys, pods)
	xs = []harness.Attachment{x.att("b6-third-"+f.node.ID, "net1", pods[0])}
	f.must(f.add(x.conf, xs[0]))

	// DEL every pod of y: x's one pod keeps the address.
	for _, a := range ys {
		f.must(f.del(y.conf, a))
	}
	f.expectLive(xs, pods)
	f.must(f.del(x.conf, xs[0]))
	f.expectLive(nil, pods)
	f.expectClean(before)
}

// B7: another process holds the bridge lock. ADD with lockTimeout 1s
// fails with 11 (try again later) within about a second, leaves nothing
// behind, and succeeds once the lock is free.
func TestLockTimeout(t *testing.T) {
	f := newFixture(t)
	pod := f.pods(1)[0]
	conf := f.conf("1.1.0", set("lockTimeout", "1s"))
	lock, err := harness.BridgeLock(f.stateDir(), harness.BridgeName)
	if err != nil {
		t.Fatal(err)
	}
	before := f.snapshot()
	// flock and its sleep child (which inherits the lock) get a process
	// group of their own, killed as one: the group ID is flock's PID.
	holder := exec.Command("flock", "-x", lock, "sleep", "30")
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := holder.Start(); err != nil {
		t.Fatalf("start flock: %v", err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			_ = unix.Kill(-holder.Process.Pid, unix.SIGKILL)
			_ = holder.Wait()
			if err := harness.WaitGroupGone(holder.Process.Pid, 5*time.Second); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(release)
	if err := harness.WaitLocked(lock, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	a := harness.Attachment{CID: "b7-" + f.node.ID, IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pod}
	begin := time.Now()
	out := f.exec(harness.Call{Command: "ADD", ContainerID: a.CID, Netns: pod.Path(), IfName: a.IfName, Stdin: conf})
	took := time.Since(begin)
	if out.RC == 0 || out.Err.Code != types.ErrTryAgainLater {
		t.Fatalf("ADD with the bridge lock held: rc %d %s, want code %d", out.RC, out.Stdout, types.ErrTryAgainLater)
	}
	if !strings.Contains(out.Err.Msg, lock) {
		t.Errorf("message does not name the lock file %s: %s", lock, out.Err.Msg)
	}
	// At least the configured 1s and less than the default: the bound
	// that tells the two apart, with room for a loaded machine.
	if took < time.Second || took >= config.DefaultLockTimeout {
		t.Errorf("ADD gave up after %s, want the 1s lockTimeout (not the %s default)", took, config.DefaultLockTimeout)
	}
	f.expectClean(before)
	if k := f.read([]harness.Netns{pod}).Pods[pod.Name]; !k.OnlyLoopback() {
		t.Fatalf("pod %s holds %v after the refused ADD, want lo only", pod.Name, k.Links)
	}

	release()
	if err := harness.LockFree(lock); err != nil {
		t.Fatal(err)
	}
	f.must(f.add(conf, a))
	f.expectLive([]harness.Attachment{a}, nil)
	f.must(f.del(conf, a))
	f.expectClean(before)
	t.Logf("ADD with the lock held returned %d after %s", out.Err.Code, took.Round(time.Millisecond))
}

// B8: GC runs while ADDs are in flight (the runtime should not do that,
// but the bridge lock must keep it safe). GC's valid list holds the new
// attachments and not the old ones: the old ones go, every new one
// survives whole and passes CHECK.
func TestGCDuringAdds(t *testing.T) {
	f := newFixture(t)
	const hostAddr = "10.77.0.250/24"
	conf := f.conf("1.1.0")
	const oldN, newN, rounds = 8, 16, 3
	pods := f.pods(oldN + rounds*newN)
	before := f.snapshot()
	mk := func(prefix string, i int) harness.Attachment {
		return harness.Attachment{CID: fmt.Sprintf("b8-%s-%s-%02d", prefix, f.node.ID, i), IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: hostAddr}
	}
	var old []harness.Attachment
	for i := 0; i < oldN; i++ {
		a := mk("old", i)
		a.Pod = pods[i]
		f.must(f.add(conf, a))
		old = append(old, a)
	}
	var live []harness.Attachment
	gcs := 0
	for r := 0; r < rounds; r++ {
		fresh := make([]harness.Attachment, newN)
		valid := []types.GCAttachment{}
		for _, a := range live {
			valid = append(valid, types.GCAttachment{ContainerID: a.CID, IfName: a.IfName})
		}
		for i := range fresh {
			fresh[i] = mk(fmt.Sprintf("r%d", r), i)
			fresh[i].Pod = pods[oldN+r*newN+i]
			valid = append(valid, types.GCAttachment{ContainerID: fresh[i].CID, IfName: fresh[i].IfName})
		}
		gcConf := f.conf("1.1.0", validAttachments(valid))
		outs := make([]harness.Outcome, newN)
		// Goroutine 0 runs GC back to back while the others ADD.
		errs := inParallel(newN+1, func(i int) error {
			if i == 0 {
				for j := 0; j < 3; j++ {
					if err := succeeded(f.call(harness.Call{Command: "GC", Stdin: gcConf})); err != nil {
						return fmt.Errorf("GC: %w", err)
					}
					gcs++
				}
				return nil
			}
			var err error
			outs[i-1], err = f.add(conf, fresh[i-1])
			return succeeded(outs[i-1], err)
		})
		failOn(t, "ADD/GC", errs)
		for i, a := range fresh {
			f.must(f.check(conf, outs[i].Stdout, a))
		}
		live = append(live, fresh...)
		f.expectLive(live, pods) // the old ones are gone, every new one is whole
	}
	for _, a := range live {
		f.must(f.del(conf, a))
	}
	f.expectLive(nil, pods)
	f.expectClean(before)
	t.Logf("%d GCs overlapped %d ADDs; %d stale attachments collected", gcs, rounds*newN, len(old))
}
