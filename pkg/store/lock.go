package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLockTimeout is returned when another process holds a lock too long.
var ErrLockTimeout = errors.New("timed out waiting for lock")

// Unlock releases a lock taken by LockBridge.
type Unlock func()

// LockBridge serialises every change to one bridge's shared state (host
// addresses, reference counts, the anti-spoof table). flock is released by
// the kernel when a process dies, so a crash never leaves it held.
func (s *Store) LockBridge(bridge string, timeout time.Duration) (Unlock, error) {
	dir := s.BridgeDir(bridge)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	return lockFile(filepath.Join(dir, "lock"), timeout)
}

func lockFile(path string, timeout time.Duration) (Unlock, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	deadline := time.Now().Add(timeout)
	for wait := 200 * time.Microsecond; ; wait = min(2*wait, 20*time.Millisecond) {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("lock %s held by another process for %s: %w", path, timeout, ErrLockTimeout)
		}
		time.Sleep(wait)
	}
}
