package kube

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// process is etcd or kube-apiserver, started by the cluster in its netns
// and ended by PID.
type process struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // set when done is closed
}

func (c *Cluster) start(name string, argv []string) (*process, error) {
	logPath := filepath.Join(c.Dir, name+".log")
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	p := &process{cmd: exec.Command(argv[0], argv[1:]...), logPath: logPath, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = log, log
	// Its own process group, so a signal meant for the test never reaches it.
	// No Pdeathsig: it fires when the forking thread ends, and Netns.Do
	// discards that thread as soon as Start returns.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Netns.Do(p.cmd.Start); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) signal(sig syscall.Signal) error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s %v: %w", p.cmd.Path, sig, err)
	}
	return nil
}

// kill sends SIGKILL to the process (its PID only) and waits for it.
func (p *process) kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s (pid %d) did not die of SIGKILL within 30s", p.cmd.Path, p.cmd.Process.Pid)
	}
}
