package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLockTimeout is returned when another process holds a lock too long.
var ErrLockTimeout = errors.New("timed out waiting for lock")

// Unlock releases a lock taken by Bridge.Lock.
type Unlock func()

// lockFile waits for the lock as long as it keeps changing hands: the
// timeout is how long one holder may keep it, not how long a queue may
// be. Under a burst of ADDs the lock goes to waiters in no particular
// order, so a fixed deadline would fail calls while the node is making
// progress; a holder that is stuck is still given up on after timeout.
//
// A waiter blocks in flock, in the kernel's queue, so it is woken the
// moment the holder lets go. (Polling with LOCK_NB and a growing sleep
// left the lock idle between holders for up to the sleep under a burst,
// and cost CPU on every retry.)
//
// pace makes what paces a waiter's checks (realPacer: one per timeout);
// tests drive the checks by hand.
func lockFile(path string, timeout time.Duration, pace newPacer) (Unlock, error) {
	f, err := openLocked(path, timeout, pace)
	if err != nil {
		return nil, err
	}
	return func() { f.Close() }, nil
}

// openLocked opens path (creating it) and takes its lock. A lock file can
// be removed by its holder (an attachment's, when the attachment goes):
// a waiter that then gets the lock of the unlinked file tries again on
// the file now at path.
func openLocked(path string, timeout time.Duration, pace newPacer) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open lock %s: %w", path, err)
		}
		if err := takeLock(f, timeout, pace); err != nil {
			if !errors.Is(err, ErrLockTimeout) { // a timed-out wait closes f itself
				f.Close()
			}
			return nil, err
		}
		if !stillAt(f, path) {
			f.Close()
			continue
		}
		if err := markHandOver(f); err != nil {
			f.Close()
			return nil, err
		}
		return f, nil
	}
}

// stillAt reports whether f is the file at path (not one since unlinked).
func stillAt(f *os.File, path string) bool {
	var held, now unix.Stat_t
	if unix.Fstat(int(f.Fd()), &held) != nil || unix.Stat(path, &now) != nil {
		return false
	}
	return held.Dev == now.Dev && held.Ino == now.Ino
}

// takeLock takes an uncontended lock with one LOCK_NB; a contended one
// is waited for.
func takeLock(f *os.File, timeout time.Duration, pace newPacer) error {
	err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	switch {
	case errors.Is(err, unix.EWOULDBLOCK) || errors.Is(err, unix.EINTR):
		p := pace(timeout)
		defer p.stop()
		return waitLock(f, timeout, p)
	case err != nil:
		return fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return nil
}

// waitLock blocks in flock on another thread and gives up at a tick (one
// per timeout) when the lock has not changed hands since the last one. A waiter that gives up
// leaves the blocked flock to close f once it returns: f stays open for
// it until then, and closing it releases a lock it got too late.
func waitLock(f *os.File, timeout time.Duration, p pacer) error {
	got := make(chan error, 1)
	go func() {
		for {
			err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
			if !errors.Is(err, unix.EINTR) {
				got <- err
				return
			}
		}
	}()
	turn := handOvers(f)
	for {
		select {
		case err := <-got:
			if err != nil {
				return fmt.Errorf("lock %s: %w", f.Name(), err)
			}
			return nil
		case <-p.ticks:
			if n := handOvers(f); n != turn {
				turn = n
				p.checked()
				continue
			}
			go func() { <-got; f.Close() }()
			return fmt.Errorf("lock %s held by another process for %s: %w", f.Name(), timeout, ErrLockTimeout)
		}
	}
}

// pacer paces a waiter's checks: one at each tick. The waiter calls
// checked after a check that found the lock changed hands, so a test
// knows when to hand it over again.
type pacer struct {
	ticks   <-chan time.Time
	checked func()
	stop    func()
}

type newPacer func(timeout time.Duration) pacer

func realPacer(timeout time.Duration) pacer {
	t := time.NewTicker(timeout)
	return pacer{ticks: t.C, checked: func() {}, stop: t.Stop}
}

// handOvers reads the counter that every holder bumps as it takes the
// lock (0 for a new or foreign lock file).
func handOvers(f *os.File) uint64 {
	var b [8]byte
	if n, _ := f.ReadAt(b[:], 0); n < len(b) {
		return 0
	}
	return binary.LittleEndian.Uint64(b[:])
}

func markHandOver(f *os.File) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], handOvers(f)+1)
	if _, err := f.WriteAt(b[:], 0); err != nil {
		return fmt.Errorf("write lock %s: %w", f.Name(), err)
	}
	return nil
}
