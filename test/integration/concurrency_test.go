package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
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
		t.Run(fmt.Sprint(n), func(t *testing.T) { hdParallelAddDel(t, n) })
	}
}

func hdParallelAddDel(t *testing.T, n int) {
	h := newHD(t)
	pods := h.pods(n)
	const hostAddr = "10.80.3.254/22"
	conf := h.conf("1.1.0", hdRange("10.80.0.0/22", "10.80.0.10", "10.80.3.250"), hdStatic(hostAddr))
	before := h.snapshot()
	atts := make([]hdAtt, n)
	for i, cid := range hdCIDs("b1-"+h.node.ID, n) {
		atts[i] = hdAtt{CID: cid, IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: hostAddr, Pod: pods[i]}
	}
	stop := h.watchHostAddrs(harness.BridgeName, hostAddr)
	outs := make([]harness.Outcome, n)
	begin := time.Now()
	errs := hdParallel(n, func(i int) error {
		var err error
		outs[i], err = h.add(conf, atts[i])
		return hdOK(outs[i], err)
	})
	addTime := time.Since(begin)
	hdFailOn(t, "ADD", errs)
	ips, hosts := map[string]string{}, map[string]string{}
	for i, out := range outs {
		ip := hdResultIP(t, out.Stdout)
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
	h.expectLive(atts, pods)
	stop = h.watchHostAddrs(harness.BridgeName, hostAddr)
	begin = time.Now()
	errs = hdParallel(n, func(i int) error {
		out, err := h.del(conf, atts[i])
		if err == nil && len(out.Stdout) != 0 {
			err = fmt.Errorf("DEL printed %q", out.Stdout)
		}
		return hdOK(out, err)
	})
	delTime := time.Since(begin)
	hdFailOn(t, "DEL", errs)
	delSamples, delViolations := stop()
	for _, v := range append(violations, delViolations...) {
		t.Error(v)
	}
	if samples == 0 || delSamples == 0 {
		t.Errorf("the host-address watcher took %d samples during the ADDs, %d during the DELs", samples, delSamples)
	}
	samples += delSamples
	h.expectLive(nil, pods)
	h.expectClean(before)
	t.Logf("%d parallel ADDs in %s, %d parallel DELs in %s, %d counted samples of the host address", n, addTime.Round(time.Millisecond), n, delTime.Round(time.Millisecond), samples)
}

// hdFailOn reports every failed call, at most 10, and stops the test.
func hdFailOn(t *testing.T, what string, errs []error) {
	t.Helper()
	failed := 0
	for i, err := range errs {
		if err != nil {
			if failed < 10 {
				t.Errorf("%s #%d: %v", what, i, err)
			}
			failed++
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d %s calls failed", failed, len(errs), what)
	}
}

// hdNet is one network of a multi-network test.
type hdNet struct {
	name, bridge, hostAddr string
	conf                   []byte
}

func (n hdNet) att(cid, ifname string, pod harness.Netns) hdAtt {
	return hdAtt{CID: cid, IfName: ifname, Network: n.name, Bridge: n.bridge, HostAddr: n.hostAddr, Pod: pod}
}

// B5: three subnets on one bridge, 20 pods each, all ADDs in parallel:
// three host addresses; deleting every pod of one subnet removes that
// subnet's address only.
func TestSubnetsOnOneBridge(t *testing.T) {
	h := newHD(t)
	static := []string{"10.81.0.250/24", "10.82.0.250/24", "10.83.0.250/24"}
	var nets []hdNet
	for i, name := range []string{"vmnet-a", "vmnet-b", "vmnet-c"} {
		subnet := fmt.Sprintf("10.%d.0", 81+i)
		conf := h.conf("1.1.0", hdSet("name", name), hdRange(subnet+".0/24", subnet+".10", subnet+".200"), hdStatic(static...))
		nets = append(nets, hdNet{name: name, bridge: harness.BridgeName, hostAddr: static[i], conf: conf})
	}
	const perNet = 20
	pods := h.pods(3 * perNet)
	before := h.snapshot()
	atts := make([]hdAtt, len(pods))
	for i := range atts {
		atts[i] = nets[i%3].att(fmt.Sprintf("b5-%s-%02d", h.node.ID, i), "net1", pods[i])
	}
	stop := h.watchHostAddrs(harness.BridgeName, static...)
	hdFailOn(t, "ADD", hdParallel(len(atts), func(i int) error { return hdOK(h.add(nets[i%3].conf, atts[i])) }))
	samples, violations := stop() // expectLive checks that nobody holds the lock
	h.expectLive(atts, pods)
	stop = h.watchHostAddrs(harness.BridgeName, static...)

	var gone, kept []hdAtt
	var keptConf [][]byte
	for i, a := range atts {
		if i%3 == 1 {
			gone = append(gone, a)
		} else {
			kept, keptConf = append(kept, a), append(keptConf, nets[i%3].conf)
		}
	}
	hdFailOn(t, "DEL", hdParallel(len(gone), func(i int) error { return hdOK(h.del(nets[1].conf, gone[i])) }))
	n, v := stop()
	samples, violations = samples+n, append(violations, v...)
	h.expectLive(kept, pods) // only 10.82.0.250/24 is gone
	stop = h.watchHostAddrs(harness.BridgeName, static...)
	hdFailOn(t, "DEL", hdParallel(len(kept), func(i int) error { return hdOK(h.del(keptConf[i], kept[i])) }))
	n, v = stop()
	samples, violations = samples+n, append(violations, v...)
	for _, v := range violations {
		t.Error(v)
	}
	h.expectLive(nil, pods)
	h.expectClean(before)
	t.Logf("%d counted samples of the host addresses", samples)
}

// B6: two networks (different names, disjoint host-local ranges) on the
// same subnet and bridge. The host address is counted per (bridge,
// subnet) across networks: it stays while either network has pods, and a
// GC of one network (empty valid list) leaves the other's users alone.
func TestSameSubnetTwoNetworks(t *testing.T) {
	h := newHD(t)
	const hostAddr = "10.77.0.250/24"
	x := hdNet{name: "vmnet-x", bridge: harness.BridgeName, hostAddr: hostAddr,
		conf: h.conf("1.1.0", hdSet("name", "vmnet-x"), hdRange("10.77.0.0/24", "10.77.0.10", "10.77.0.100"))}
	y := hdNet{name: "vmnet-y", bridge: harness.BridgeName, hostAddr: hostAddr,
		conf: h.conf("1.1.0", hdSet("name", "vmnet-y"), hdRange("10.77.0.0/24", "10.77.0.101", "10.77.0.200"))}
	pods := h.pods(6)
	before := h.snapshot()
	var xs, ys []hdAtt
	ips := map[string]bool{}
	for i, p := range pods {
		n, list := x, &xs
		if i%2 == 1 {
			n, list = y, &ys
		}
		a := n.att(fmt.Sprintf("b6-%s-%d", h.node.ID, i), "net1", p)
		out := h.mustCall(harness.Call{Command: "ADD", ContainerID: a.CID, Netns: p.Path(), IfName: a.IfName, Stdin: n.conf})
		if out.RC != 0 {
			t.Fatalf("ADD %s: %s", a.CID, out.Stdout)
		}
		ip := hdResultIP(t, out.Stdout)
		if ips[ip] {
			t.Errorf("IP %s given twice across the networks", ip)
		}
		ips[ip] = true
		*list = append(*list, a)
	}
	h.expectLive(append(append([]hdAtt{}, xs...), ys...), pods)

	// DEL every pod of x: y still needs the address.
	for _, a := range xs {
		h.must(h.del(x.conf, a))
	}
	h.expectLive(ys, pods)

	// ADD x again, then GC x with an empty list: x's pods go, y's stay.
	xs = []hdAtt{x.att("b6-again-"+h.node.ID, "net1", pods[0])}
	h.must(h.add(x.conf, xs[0]))
	gc := h.conf("1.1.0", hdSet("name", "vmnet-x"), hdRange("10.77.0.0/24", "10.77.0.10", "10.77.0.100"),
		hdValid(nil))
	h.must(h.call(harness.Call{Command: "GC", Stdin: gc}))
	h.expectLive(ys, pods)
	xs = []hdAtt{x.att("b6-third-"+h.node.ID, "net1", pods[0])}
	h.must(h.add(x.conf, xs[0]))

	// DEL every pod of y: x's one pod keeps the address.
	for _, a := range ys {
		h.must(h.del(y.conf, a))
	}
	h.expectLive(xs, pods)
	h.must(h.del(x.conf, xs[0]))
	h.expectLive(nil, pods)
	h.expectClean(before)
}

// must fails the test unless the call returned rc 0.
func (h *hd) must(out harness.Outcome, err error) harness.Outcome {
	h.t.Helper()
	if err := hdOK(out, err); err != nil {
		h.t.Fatal(err)
	}
	return out
}

// B7: another process holds the bridge lock. ADD with lockTimeout 1s
// fails with 11 (try again later) within about a second, leaves nothing
// behind, and succeeds once the lock is free.
func TestLockTimeout(t *testing.T) {
	h := newHD(t)
	pod := h.pods(1)[0]
	conf := h.conf("1.1.0", hdSet("lockTimeout", "1s"))
	lockDir := filepath.Join(h.stateDir(), "bridges", harness.BridgeName)
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		t.Fatal(err)
	}
	before := h.snapshot()
	lock := filepath.Join(lockDir, "lock")
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
			if err := hdWaitGroupGone(holder.Process.Pid, 5*time.Second); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(release)
	hdWaitLocked(t, lock)

	a := hdAtt{CID: "b7-" + h.node.ID, IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pod}
	begin := time.Now()
	out := h.mustCall(harness.Call{Command: "ADD", ContainerID: a.CID, Netns: pod.Path(), IfName: a.IfName, Stdin: conf})
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
	h.expectClean(before)
	if err := errors.Join(h.checkPods(nil, []harness.Netns{pod})...); err != nil {
		t.Fatal(err)
	}

	release()
	if err := hdLockFree(lock); err != nil {
		t.Fatal(err)
	}
	h.must(h.add(conf, a))
	h.expectLive([]hdAtt{a}, nil)
	h.must(h.del(conf, a))
	h.expectClean(before)
	t.Logf("ADD with the lock held returned %d after %s", out.Err.Code, took.Round(time.Millisecond))
}

// hdWaitLocked waits until someone holds the lock file.
func hdWaitLocked(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if f, err := os.Open(path); err == nil {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			f.Close()
			if err != nil {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("nobody took %s", path)
}

// B8: GC runs while ADDs are in flight (the runtime should not do that,
// but the bridge lock must keep it safe). GC's valid list holds the new
// attachments and not the old ones: the old ones go, every new one
// survives whole and passes CHECK.
func TestGCDuringAdds(t *testing.T) {
	h := newHD(t)
	const hostAddr = "10.77.0.250/24"
	conf := h.conf("1.1.0")
	const oldN, newN, rounds = 8, 16, 3
	pods := h.pods(oldN + rounds*newN)
	before := h.snapshot()
	mk := func(prefix string, i int) hdAtt {
		return hdAtt{CID: fmt.Sprintf("b8-%s-%s-%02d", prefix, h.node.ID, i), IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: hostAddr}
	}
	var old []hdAtt
	for i := 0; i < oldN; i++ {
		a := mk("old", i)
		a.Pod = pods[i]
		h.must(h.add(conf, a))
		old = append(old, a)
	}
	var live []hdAtt
	gcs := 0
	for r := 0; r < rounds; r++ {
		fresh := make([]hdAtt, newN)
		valid := []types.GCAttachment{}
		for _, a := range live {
			valid = append(valid, types.GCAttachment{ContainerID: a.CID, IfName: a.IfName})
		}
		for i := range fresh {
			fresh[i] = mk(fmt.Sprintf("r%d", r), i)
			fresh[i].Pod = pods[oldN+r*newN+i]
			valid = append(valid, types.GCAttachment{ContainerID: fresh[i].CID, IfName: fresh[i].IfName})
		}
		gcConf := h.conf("1.1.0", hdValid(valid))
		outs := make([]harness.Outcome, newN)
		// Goroutine 0 runs GC back to back while the others ADD.
		errs := hdParallel(newN+1, func(i int) error {
			if i == 0 {
				for j := 0; j < 3; j++ {
					if err := hdOK(h.call(harness.Call{Command: "GC", Stdin: gcConf})); err != nil {
						return fmt.Errorf("GC: %w", err)
					}
					gcs++
				}
				return nil
			}
			var err error
			outs[i-1], err = h.add(conf, fresh[i-1])
			return hdOK(outs[i-1], err)
		})
		hdFailOn(t, "ADD/GC", errs)
		for i, a := range fresh {
			h.must(h.check(conf, outs[i].Stdout, a))
		}
		live = append(live, fresh...)
		h.expectLive(live, pods) // the old ones are gone, every new one is whole
	}
	for _, a := range live {
		h.must(h.del(conf, a))
	}
	h.expectLive(nil, pods)
	h.expectClean(before)
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
	att   hdAtt  // att.CID changes under churn.netMu[net] and churn.mu
	state string // "absent", "live" or "abandoned" (netns deleted, no DEL: GC must collect it)
	gen   int
}

// churn is the shared state of B4.
type churn struct {
	h     *hd
	nets  []hdNet
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
	h := newHD(t)
	h.addBridge("br-tb2")
	c := &churn{h: h, valid: map[*churnSlot]bool{}, count: map[string]int{}}
	for i, b := range []string{harness.BridgeName, harness.BridgeName, "br-tb2"} {
		subnet := fmt.Sprintf("10.%d.0", 84+i)
		n := hdNet{name: fmt.Sprintf("churn-%d", i), bridge: b, hostAddr: subnet + ".250/24"}
		n.conf = h.conf("1.1.0", hdSet("name", n.name), hdSet("bridge", b),
			hdRange(subnet+".0/24", subnet+".10", subnet+".200"), hdStatic(n.hostAddr))
		c.nets, c.rts = append(c.nets, n), append(c.rts, h.runtime(n.conf))
	}
	const slots, workers = 24, 4
	c.netMu = make([]sync.RWMutex, len(c.nets))
	pods := h.pods(slots)
	before := h.snapshot()
	for i := 0; i < slots; i++ {
		s := &churnSlot{net: i % 3, state: "absent"}
		s.att = c.nets[s.net].att(fmt.Sprintf("b4-%s-%02d-0", h.node.ID, i), fmt.Sprintf("pod%02dchurn", i), pods[i])
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
	h.expectLive(nil, c.pods())
	h.expectClean(before)
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
	p, err := c.h.newPod()
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
	var live []hdAtt
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
	return c.h.liveErr(live, c.pods())
}
