package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"

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
	if took < time.Second || took > 3*time.Second {
		t.Errorf("ADD gave up after %s, want about the 1s lockTimeout", took)
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

// churnDuration is how long B4 runs: ~20 s in `make test`, or
// TAPBRIDGE_SOAK (e.g. "3m") for `make soak`.
func churnDuration(t *testing.T) time.Duration {
	s := os.Getenv("TAPBRIDGE_SOAK")
	if s == "" {
		if testing.Short() {
			return 5 * time.Second
		}
		return 20 * time.Second
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("TAPBRIDGE_SOAK=%q: %v", s, err)
	}
	return d
}

// churnSlot is one attachment the churn workers create and destroy.
type churnSlot struct {
	mu    sync.Mutex // held by the worker using the slot
	net   int
	att   harness.Attachment // att.CID changes under churn.netMu[net] and churn.mu
	state string             // "absent", "live" or "abandoned" (netns deleted, no DEL: GC must collect it)
	gen   int
}

// churn is the shared state of B4.
type churn struct {
	f     *fixture
	nets  []network
	rts   []*runtime
	slots []*churnSlot
	gate  sync.RWMutex        // operations share it; a quiesce point takes it alone
	netMu []sync.RWMutex      // per network: a GC holds it shared, a change of container ID alone
	mu    sync.Mutex          // guards valid, counts, errs and container IDs
	valid map[*churnSlot]bool // every slot not abandoned: GC leaves them alone
	count map[string]int
	errs  []error
}

// B4: K workers run random ADD, DEL (sometimes after deleting the netns
// behind the plugin's back), DEL-again, CHECK and GC over 3 subnets on 2
// bridges through libcni, and abandon attachments (netns deleted, no DEL)
// for GC to collect. At each quiesce point the node must hold exactly
// the live set; the only error allowed is a transient 11, after which a
// retry must succeed. The final DEL-all gives CLEAN.
func TestChurn(t *testing.T) {
	f := newFixture(t)
	f.addBridge("br-tb2")
	c := &churn{f: f, valid: map[*churnSlot]bool{}, count: map[string]int{}}
	for i, b := range []string{harness.BridgeName, harness.BridgeName, "br-tb2"} {
		subnet := fmt.Sprintf("10.%d.0", 84+i)
		n := network{name: fmt.Sprintf("churn-%d", i), bridge: b, hostAddr: subnet + ".250/24"}
		n.conf = f.conf("1.1.0", set("name", n.name), set("bridge", b),
			ipRange(subnet+".0/24", subnet+".10", subnet+".200"), staticHostAddrs(n.hostAddr))
		c.nets, c.rts = append(c.nets, n), append(c.rts, f.runtime(n.conf))
	}
	const slots, workers = 24, 4
	c.netMu = make([]sync.RWMutex, len(c.nets))
	pods := f.pods(slots)
	before := f.snapshot()
	for i := 0; i < slots; i++ {
		s := &churnSlot{net: i % 3, state: "absent"}
		s.att = c.nets[s.net].att(fmt.Sprintf("b4-%s-%02d-0", f.node.ID, i), fmt.Sprintf("pod%02dchurn", i), pods[i])
		c.slots = append(c.slots, s)
		c.valid[s] = true
	}
	for _, r := range c.rts {
		// libcni sets up its exec on first use without a lock: do that
		// here, before the workers share the runtimes.
		if err := r.status(); err != nil {
			t.Fatalf("STATUS: %v", err)
		}
	}
	d := churnDuration(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for {
				select {
				case <-stop:
					return
				default:
				}
				c.step(rnd)
			}
		}()
	}
	end := time.Now().Add(d)
	quiesces := 0
	var failure error
	for failure == nil && time.Now().Before(end) {
		time.Sleep(min(4*time.Second, time.Until(end)))
		c.gate.Lock()
		failure = c.quiesce()
		c.gate.Unlock()
		quiesces++
	}
	close(stop)
	wg.Wait()
	if failure != nil {
		t.Fatalf("quiesce point %d: %v", quiesces, failure)
	}
	for _, err := range c.errs {
		t.Error(err)
	}
	// Final: DEL every live attachment, GC the abandoned, CLEAN.
	for _, s := range c.slots {
		if s.state == "live" {
			if err := c.rts[s.net].del(rtConf(s.att.CID, s.att.Pod, s.att.IfName)); err != nil {
				t.Errorf("final DEL %s: %v", s.att.CID, err)
			}
			s.state = "absent"
		}
	}
	if err := c.quiesce(); err != nil {
		t.Fatal(err)
	}
	f.expectLive(nil, c.pods())
	f.expectClean(before)
	t.Logf("%s of churn with %d workers: %v, %d quiesce points", d, workers, c.count, quiesces)
}

func (c *churn) pods() []harness.Netns {
	var out []harness.Netns
	for _, s := range c.slots {
		out = append(out, s.att.Pod)
	}
	return out
}

func (c *churn) fail(format string, a ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.errs) < 20 {
		c.errs = append(c.errs, fmt.Errorf(format, a...))
	}
}

func (c *churn) tally(what string) {
	c.mu.Lock()
	c.count[what]++
	c.mu.Unlock()
}

func (c *churn) setValid(s *churnSlot, v bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v {
		c.valid[s] = true
	} else {
		delete(c.valid, s)
	}
}

// validOf lists the attachments of network n that GC must not touch:
// every slot's current container ID, whatever its state, except the
// abandoned ones. The caller holds netMu[n] shared, so no slot takes a
// new container ID (and starts an ADD the list does not name) meanwhile.
func (c *churn) validOf(n int) []types.GCAttachment {
	c.mu.Lock()
	defer c.mu.Unlock()
	list := []types.GCAttachment{}
	for s := range c.valid {
		if s.net == n {
			list = append(list, types.GCAttachment{ContainerID: s.att.CID, IfName: s.att.IfName})
		}
	}
	return list
}

// retry runs op until it succeeds or fails with something else than a
// transient 11 (which it counts).
func (c *churn) retry(what string, op func() error) error {
	for try := 0; ; try++ {
		err := op()
		var cniErr *types.Error
		if err == nil || !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater || try == 5 {
			return err
		}
		c.tally(what + " 11")
		time.Sleep(100 * time.Millisecond)
	}
}

// step does one random operation on one random free slot.
func (c *churn) step(rnd *rand.Rand) {
	s := c.slots[rnd.IntN(len(c.slots))]
	if !s.mu.TryLock() {
		return
	}
	defer s.mu.Unlock()
	c.gate.RLock()
	defer c.gate.RUnlock()
	r := c.rts[s.net]
	rt := rtConf(s.att.CID, s.att.Pod, s.att.IfName)
	switch p := rnd.Float64(); {
	case s.state == "abandoned":
		time.Sleep(time.Millisecond) // GC's job
	case s.state == "absent":
		if err := c.retry("ADD", func() error { _, err := r.add(rt); return err }); err != nil {
			c.fail("ADD %s: %v", s.att.CID, err)
			return
		}
		s.state = "live"
		c.tally("ADD")
	case p < 0.30:
		if rnd.IntN(3) == 0 {
			c.dropPod(s)
			c.tally("netns deleted before DEL")
		}
		for _, what := range []string{"DEL", "DEL-again"} {
			if err := c.retry(what, func() error { return r.del(rt) }); err != nil {
				c.fail("%s %s: %v", what, s.att.CID, err)
				return
			}
			c.tally(what)
		}
		s.state = "absent"
		c.renew(s)
	case p < 0.40:
		c.setValid(s, false)
		c.dropPod(s)
		s.state = "abandoned"
		c.tally("abandoned")
	case p < 0.75:
		if err := c.retry("CHECK", func() error { return r.check(rt) }); err != nil {
			c.fail("CHECK %s: %v", s.att.CID, err)
			return
		}
		c.tally("CHECK")
	default:
		c.netMu[s.net].RLock()
		defer c.netMu[s.net].RUnlock()
		valid := c.validOf(s.net)
		if err := c.retry("GC", func() error { return r.gc(&libcni.GCArgs{ValidAttachments: valid}) }); err != nil {
			c.fail("GC %s: %v", c.nets[s.net].name, err)
			return
		}
		c.tally("GC")
	}
}

// dropPod deletes the slot's netns behind the plugin's back (its devices
// go with it) and gives the slot a fresh one.
func (c *churn) dropPod(s *churnSlot) {
	if err := s.att.Pod.Delete(); err != nil {
		c.fail("delete netns %s: %v", s.att.Pod.Name, err)
	}
	p, err := c.f.newPod()
	if err != nil {
		c.fail("new pod: %v", err)
		return
	}
	s.att.Pod = p
}

// renew gives the slot a new container ID, so that the next ADD is a new
// attachment (and a leak of the old one cannot hide behind it).
func (c *churn) renew(s *churnSlot) {
	c.netMu[s.net].Lock()
	defer c.netMu[s.net].Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	s.gen++
	s.att.CID = fmt.Sprintf("%s-%d", s.att.CID[:strings.LastIndex(s.att.CID, "-")], s.gen)
}

// quiesce runs with every worker stopped: GC collects the abandoned
// attachments, then the node must hold exactly the live ones.
func (c *churn) quiesce() error {
	for n := range c.nets {
		var valid []types.GCAttachment
		for _, s := range c.slots {
			if s.net == n && s.state == "live" {
				valid = append(valid, types.GCAttachment{ContainerID: s.att.CID, IfName: s.att.IfName})
			}
		}
		if err := c.rts[n].gc(&libcni.GCArgs{ValidAttachments: append([]types.GCAttachment{}, valid...)}); err != nil {
			return fmt.Errorf("GC of %s: %w", c.nets[n].name, err)
		}
	}
	var live []harness.Attachment
	for _, s := range c.slots {
		switch s.state {
		case "abandoned":
			s.state = "absent"
			c.renew(s)
			c.setValid(s, true)
		case "live":
			live = append(live, s.att)
		}
	}
	c.tally("quiesce")
	return c.f.liveErr(live, c.pods())
}
