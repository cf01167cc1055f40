package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The node agent (tapbridge-agent) serves the guests of the records in
// dataDir. While it runs it holds, relative to dataDir,
//
//	agent.lock   flocked exclusively by the one agent serving this dataDir
//
// so the plugin's STATUS can tell whether guests of a served network
// would get their addresses, and a second agent on the same dataDir fails
// at start instead of answering every request twice. The kernel drops the
// lock when the agent dies, however it dies: there is nothing to clean up
// and nothing to go stale.

// ErrAgentRunning is returned by LockAgent when another agent holds the lock.
var ErrAgentRunning = errors.New("another tapbridge-agent serves this state directory")

func agentLockPath(dir string) string { return filepath.Join(dir, "agent.lock") }

// AgentLockPath is the agent's lock, for the tools that walk dataDir: it
// is a fact about the node (an agent runs or ran), not a trace of an
// attachment.
func AgentLockPath(dir string) string { return agentLockPath(dir) }

// AgentLock is held by the running agent; Release lets it go.
type AgentLock struct {
	f *os.File
}

// LockAgent takes the agent lock of dataDir without waiting, creating the
// state directory if needed.
func LockAgent(dir string) (*AgentLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent lock: %w", err)
	}
	f, err := os.OpenFile(agentLockPath(dir), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("agent lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s)", ErrAgentRunning, dir)
		}
		return nil, fmt.Errorf("agent lock %s: %w", agentLockPath(dir), err)
	}
	return &AgentLock{f: f}, nil
}

// Release lets the lock go (closing the file drops the flock).
func (l *AgentLock) Release() error { return l.f.Close() }

// AgentRunning reports whether an agent holds dataDir's agent lock now.
// It only tests the lock: a shared lock it gets is dropped at once.
func (r Reader) AgentRunning() (bool, error) {
	f, err := os.Open(agentLockPath(r.dir))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("agent lock: %w", err)
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	switch {
	case errors.Is(err, unix.EWOULDBLOCK):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("agent lock %s: %w", agentLockPath(r.dir), err)
	}
	return false, nil
}
