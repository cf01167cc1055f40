package cluster

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// PingInterval is how often a Pinger (and a guest's tb.watch) pings.
const PingInterval = 100 * time.Millisecond

// replyRE matches busybox ping's line for one reply (not a duplicate).
var replyRE = regexp.MustCompile(`bytes from ([0-9a-fA-F.:]+): seq=(\d+) `)

// Reply is one echo reply a continuous ping got.
type Reply struct {
	Seq int
	At  time.Time // when it was read (for a guest: when its console line was)
}

// ParseReplies picks the replies from dst out of busybox ping's output
// lines (a guest's console, for tb.watch). Their times are zero.
func ParseReplies(lines []string, dst netip.Addr) []Reply {
	var out []Reply
	for _, l := range lines {
		if r, ok := parseReply(l, dst); ok {
			out = append(out, r)
		}
	}
	return out
}

func parseReply(line string, dst netip.Addr) (Reply, bool) {
	m := replyRE.FindStringSubmatch(line)
	if m == nil || m[1] != dst.String() || strings.Contains(line, "DUP") {
		return Reply{}, false
	}
	seq, err := strconv.Atoi(m[2])
	return Reply{Seq: seq}, err == nil
}

// Outage sums up a continuous ping across an event, from its first reply
// to its last: the pings lost in between and the longest time without a
// reply (in ping intervals, so a guest's figures compare with a host's).
type Outage struct {
	Received   int
	Lost       int           // requests between the first and the last reply that got none
	LongestGap time.Duration // longest stretch between two replies
}

// OutageOf computes the outage from the replies (any order, duplicates
// ignored).
func OutageOf(replies []Reply) Outage {
	seen := map[int]bool{}
	first, last := -1, -1
	for _, r := range replies {
		if seen[r.Seq] {
			continue
		}
		seen[r.Seq] = true
		if first < 0 || r.Seq < first {
			first = r.Seq
		}
		last = max(last, r.Seq)
	}
	o := Outage{Received: len(seen)}
	if first < 0 {
		return o
	}
	o.Lost = last - first + 1 - len(seen)
	prev := first
	for s := first + 1; s <= last; s++ {
		if seen[s] {
			o.LongestGap = max(o.LongestGap, time.Duration(s-prev)*PingInterval)
			prev = s
		}
	}
	return o
}

func (o Outage) String() string {
	return fmt.Sprintf("%d replies, %d lost, longest gap %v", o.Received, o.Lost, o.LongestGap)
}

// Pinger pings an address PingInterval apart from a netns, with busybox
// ping, until stopped, and records the replies.
type Pinger struct {
	Name string // e.g. "peer -> vm"

	cmd  *exec.Cmd
	dst  netip.Addr
	mu   sync.Mutex
	got  []Reply
	done chan struct{} // closed once ping has exited and been reaped
	err  error
}

// StartPinger starts pinging dst from src in ns; Close stops it too.
func (c *Cluster) StartPinger(ns harness.Netns, name string, src, dst netip.Addr) (*Pinger, error) {
	p := &Pinger{Name: name, dst: dst, done: make(chan struct{})}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(busybox, "ping", "-i", strconv.FormatFloat(PingInterval.Seconds(), 'f', -1, 64), "-I", src.String(), dst.String())
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	// Tied to the thread below, which lives in ns until ping exits.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		defer close(p.done)
		p.err = ns.Do(func() error {
			err := p.cmd.Start()
			pw.Close()
			started <- err
			if err != nil {
				return err
			}
			p.read(pr)
			return p.cmd.Wait()
		})
	}()
	if err := <-started; err != nil {
		<-p.done
		pr.Close()
		return nil, fmt.Errorf("start ping %s: %w", name, err)
	}
	c.onClose(func() error { p.Stop(); return nil })
	return p, nil
}

func (p *Pinger) read(pr *os.File) {
	defer pr.Close()
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if r, ok := parseReply(sc.Text(), p.dst); ok {
			r.At = time.Now()
			p.mu.Lock()
			p.got = append(p.got, r)
			p.mu.Unlock()
		}
	}
}

// Replies returns the replies so far.
func (p *Pinger) Replies() []Reply {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Reply(nil), p.got...)
}

// RepliesSince counts the replies read after t.
func (p *Pinger) RepliesSince(t time.Time) int {
	n := 0
	for _, r := range p.Replies() {
		if r.At.After(t) {
			n++
		}
	}
	return n
}

// Stop interrupts ping and returns the outage over its replies.
func (p *Pinger) Stop() Outage {
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return OutageOf(p.Replies())
}
