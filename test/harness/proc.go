package harness

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Proc is a plugin process a test started, to be killed by PID.
type Proc struct {
	Cmd    *exec.Cmd
	Stdout bytes.Buffer
	Stderr bytes.Buffer
}

// Start launches c in the calling thread's netns, in a process group of
// its own (so the test can wait for the IPAM child it leaves behind),
// and returns at once; env is added to c's environment.
func (c Call) Start(env ...string) (*Proc, error) {
	p := &Proc{Cmd: exec.Command(c.Binary)}
	p.Cmd.Env = append(c.Env(), env...)
	p.Cmd.Stdin = bytes.NewReader(c.Stdin)
	p.Cmd.Stdout, p.Cmd.Stderr = &p.Stdout, &p.Stderr
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", c.Binary, err)
	}
	return p, nil
}

// Start launches a long-running binary (the node agent) with args in the
// calling thread's netns, in a process group of its own, with stdout and
// stderr going to out (which must be safe for concurrent use if the test
// reads it while the process runs), and returns at once.
func Start(out io.Writer, binary string, args ...string) (*Proc, error) {
	p := &Proc{Cmd: exec.Command(binary, args...)}
	p.Cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	p.Cmd.Stdout, p.Cmd.Stderr = out, out
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	return p, nil
}

// Kill sends SIGKILL to the plugin (by PID, nothing else), reaps it, and
// waits until its process group is empty. It does not wait for the IPAM
// plugin it started: that runs in a group of its own and outlives it, as
// it does under a runtime (the next call on the attachment waits for it
// on the record's lock; WaitContainerGone waits for it outright). It
// reports whether the plugin was still running when killed.
func (p *Proc) Kill() (killed bool, err error) {
	pid := p.Cmd.Process.Pid
	kerr := p.Cmd.Process.Kill()
	werr := p.Cmd.Wait()
	killed = kerr == nil && !p.Cmd.ProcessState.Success() && p.Cmd.ProcessState.Sys().(syscall.WaitStatus).Signaled()
	if werr != nil && !killed {
		var exitErr *exec.ExitError
		if !errors.As(werr, &exitErr) {
			return false, werr
		}
	}
	return killed, WaitGroupGone(pid, 10*time.Second)
}

// Wait waits for the plugin to exit by itself and for its process group
// (not its IPAM plugin: see Kill); limit bounds the wait (then it is
// killed and the error says so).
func (p *Proc) Wait(limit time.Duration) (rc int, err error) {
	done := make(chan error, 1)
	go func() { done <- p.Cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(limit):
		_ = p.Cmd.Process.Kill()
		<-done
		return -1, fmt.Errorf("%s did not exit within %s (killed)", p.Cmd.Path, limit)
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return -1, err
	}
	return p.Cmd.ProcessState.ExitCode(), WaitGroupGone(p.Cmd.Process.Pid, 10*time.Second)
}

// WaitGroupGone waits until process group pgid has no member left.
func WaitGroupGone(pgid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		err := unix.Kill(-pgid, 0)
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of group %d still running after %s: %v", pgid, limit, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// WaitContainerGone waits until no process runs with
// CNI_CONTAINERID=cid in its environment: an IPAM plugin a crashed ADD
// left behind finishes on its own, and a snapshot taken before it ends
// would race it.
func WaitContainerGone(cid string, limit time.Duration) error {
	needle := []byte("\x00CNI_CONTAINERID=" + cid + "\x00")
	for deadline := time.Now().Add(limit); processWithEnv(needle); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("a process of container %s is still running after %s", cid, limit)
		}
	}
	return nil
}

func processWithEnv(needle []byte) bool {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if d.Name()[0] < '0' || d.Name()[0] > '9' {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		if err == nil && bytes.Contains(append(append([]byte{0}, env...), 0), needle) {
			return true
		}
	}
	return false
}

// WaitBlockedInFlock waits until the process is queued for a flock held by
// another (a "->" line of /proc/locks with its PID).
func (p *Proc) WaitBlockedInFlock(limit time.Duration) error {
	pid := strconv.Itoa(p.Cmd.Process.Pid)
	for deadline := time.Now().Add(limit); ; time.Sleep(5 * time.Millisecond) {
		locks, err := os.ReadFile("/proc/locks")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(locks), "\n") {
			if f := strings.Fields(line); len(f) > 5 && f[1] == "->" && f[2] == "FLOCK" && f[5] == pid {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (pid %s) did not wait for a lock within %s", p.Cmd.Path, pid, limit)
		}
	}
}
