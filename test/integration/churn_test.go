package integration

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

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
