package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// agentMetricsAddr is on the node netns's own loopback: the agent serves
// /metrics as the DaemonSet runs it, and the RSS includes that.
const agentMetricsAddr = "127.0.0.1:9741"

// agentProc is tapbridge-agent running in the node netns, as the
// DaemonSet runs it (hostNetwork), with its JSON log read as it comes.
type agentProc struct {
	proc   *harness.Proc
	log    *agentLog
	exited chan struct{} // closed once the process is reaped
	once   sync.Once
}

// agentBinary is -agent, else the tapbridge-agent beside -plugin (make
// build puts both in bin/), else one built for this run.
func (b *bench) agentBinary() (string, error) {
	if b.opts.Agent != "" {
		return filepath.Abs(b.opts.Agent)
	}
	if b.opts.Plugin != "" {
		beside := filepath.Join(filepath.Dir(b.tapbridge), "tapbridge-agent")
		if _, err := os.Stat(beside); err == nil {
			return beside, nil
		}
	}
	return harness.BuildAgent(filepath.Join(b.dir, "bin"))
}

// startAgent starts the agent on dataDir and waits for its start line.
// The registry stops it if the run ends before the section does.
func (b *bench) startAgent(ctx context.Context, bin, dataDir string) (*agentProc, error) {
	a := &agentProc{log: newAgentLog(), exited: make(chan struct{})}
	err := inNS(b.node, func() (err error) {
		a.proc, err = harness.Start(a.log, bin, "-data-dir", dataDir, "-metrics-addr", agentMetricsAddr)
		return err
	})
	if err != nil {
		return nil, err
	}
	go func() {
		_ = a.proc.Cmd.Wait()
		close(a.exited)
	}()
	if err := b.reg.onCleanup(a.stop); err != nil {
		return nil, err
	}
	if err := a.waitFor(ctx, 10*time.Second, "its start line", func(l *agentLog) bool { return l.started }); err != nil {
		return nil, errors.Join(err, a.stop())
	}
	return a, nil
}

// stop ends the agent as Kubernetes does (SIGTERM, SIGKILL after 10 s),
// by its PID, and waits for its process group. The agent stops serving
// every port and exits 0 on SIGTERM; anything else is an error. Only the
// first call does anything.
func (a *agentProc) stop() (err error) {
	a.once.Do(func() {
		p := a.proc.Cmd.Process
		if err = p.Signal(syscall.SIGTERM); err != nil {
			select {
			case <-a.exited:
				err = fmt.Errorf("the agent had exited: %s; its last lines:\n%s", a.proc.Cmd.ProcessState, a.log.lastLines())
			default:
			}
			return
		}
		select {
		case <-a.exited:
		case <-time.After(10 * time.Second):
			_ = p.Kill()
			<-a.exited
			err = fmt.Errorf("the agent did not exit within 10 s of SIGTERM (killed)")
		}
		if err == nil && a.proc.Cmd.ProcessState.ExitCode() != 0 {
			err = fmt.Errorf("the agent exited with %s on SIGTERM; its last lines:\n%s", a.proc.Cmd.ProcessState, a.log.lastLines())
		}
		if gerr := harness.WaitGroupGone(p.Pid, 10*time.Second); err == nil {
			err = gerr
		}
	})
	return err
}

// waitFor polls the log until cond holds; it fails if the agent exits,
// the run is cancelled, or limit passes.
func (a *agentProc) waitFor(ctx context.Context, limit time.Duration, what string, cond func(*agentLog) bool) error {
	deadline := time.Now().Add(limit)
	for {
		a.log.mu.Lock()
		ok := cond(a.log)
		a.log.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-a.exited:
			return fmt.Errorf("the agent exited (%s) while the bench waited for %s; its last lines:\n%s", a.proc.Cmd.ProcessState, what, a.log.lastLines())
		default:
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent did not log %s within %s; its last lines:\n%s", what, limit, a.log.lastLines())
		}
		time.Sleep(time.Millisecond)
	}
}

// servedAt waits for the agent's "serving" line for port and returns the
// time the agent logged it.
func (a *agentProc) servedAt(ctx context.Context, port string, limit time.Duration) (time.Time, error) {
	var at time.Time
	err := a.waitFor(ctx, limit, fmt.Sprintf("%q for port %s", "serving", port), func(l *agentLog) bool {
		var ok bool
		at, ok = l.served[port]
		return ok
	})
	return at, err
}

// agentLog parses the agent's JSON lines as they are written: when each
// port was served (by the agent's own clock, nanoseconds), how many it
// stopped serving, and the last lines for error messages.
type agentLog struct {
	mu      sync.Mutex
	partial []byte
	started bool
	served  map[string]time.Time // by port (host end of the veth)
	stopped int
	last    []string
}

func newAgentLog() *agentLog { return &agentLog{served: map[string]time.Time{}} }

func (l *agentLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.line(l.partial[:i])
		l.partial = append(l.partial[:0], l.partial[i+1:]...)
	}
	return len(p), nil
}

func (l *agentLog) line(b []byte) {
	var ll struct {
		Time time.Time `json:"time"`
		Msg  string    `json:"msg"`
		Port string    `json:"port"`
	}
	if len(l.last) == 20 {
		l.last = l.last[1:]
	}
	l.last = append(l.last, string(b))
	if json.Unmarshal(b, &ll) != nil {
		return
	}
	switch ll.Msg {
	case "tapbridge-agent started":
		l.started = true
	case "serving":
		l.served[ll.Port] = ll.Time
	case "stopped serving":
		l.stopped++
	}
}

func (l *agentLog) lastLines() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.last, "\n")
}

// procStat is what /proc says of the agent: memory (exact counters, KiB)
// and CPU. utime+stime count USER_HZ ticks (10 ms); schedstat, summed
// over the threads, gives nanoseconds on a CPU and how many times a
// thread was put on one: the wake-ups an idle agent should not have.
type procStat struct {
	rssKB, hwmKB int64
	ticksCPU     time.Duration
	onCPU        time.Duration
	runs         int64
}

func readProcStat(pid int) (procStat, error) {
	var s procStat
	dir := fmt.Sprintf("/proc/%d", pid)
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			s.rssKB, _ = strconv.ParseInt(f[0], 10, 64)
		case "VmHWM":
			s.hwmKB, _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	if s.ticksCPU, err = processCPU(pid); err != nil {
		return s, err
	}
	tasks, err := os.ReadDir(dir + "/task")
	if err != nil {
		return s, err
	}
	for _, t := range tasks {
		data, err := os.ReadFile(filepath.Join(dir, "task", t.Name(), "schedstat"))
		if err != nil {
			continue // the thread exited
		}
		if f := strings.Fields(string(data)); len(f) == 3 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			runs, _ := strconv.ParseInt(f[2], 10, 64)
			s.onCPU += time.Duration(ns)
			s.runs += runs
		}
	}
	return s, nil
}

func (a *agentProc) stat() (procStat, error) { return readProcStat(a.proc.Cmd.Process.Pid) }

// idle is the agent's CPU over d while nothing is asked of it, after a
// second for the wake-ups of what came before (a port's start, a burst's
// garbage collection) to pass.
func (a *agentProc) idle(ctx context.Context, d time.Duration) (cpu procStat, err error) {
	select {
	case <-ctx.Done():
		return cpu, ctx.Err()
	case <-time.After(time.Second):
	}
	before, err := a.stat()
	if err != nil {
		return cpu, err
	}
	select {
	case <-ctx.Done():
		return cpu, ctx.Err()
	case <-time.After(d):
	}
	after, err := a.stat()
	cpu = procStat{ticksCPU: after.ticksCPU - before.ticksCPU, onCPU: after.onCPU - before.onCPU, runs: after.runs - before.runs}
	return cpu, err
}
