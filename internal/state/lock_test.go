package state

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests assert events, not durations: the machine may be loaded, so
// every wait below is for something to happen, bounded only by the test's
// own deadline.

// manualPacer hands the test the waiter's ticks, and tells it when a
// check has seen the lock change hands.
func manualPacer(ticks chan time.Time, checked chan struct{}) newPacer {
	return func(time.Duration) pacer {
		return pacer{ticks: ticks, checked: func() { checked <- struct{}{} }, stop: func() {}}
	}
}

type lockResult struct {
	unlock Unlock
	err    error
}

func startWaiter(path string, pace newPacer) chan lockResult {
	done := make(chan lockResult, 1)
	go func() {
		u, err := lockFile(path, time.Millisecond, pace)
		done <- lockResult{u, err}
	}()
	return done
}

// waitBlockedInFlock waits until the kernel lists a waiter blocked in
// flock on path: a waiter that polled with LOCK_NB would never be listed.
func waitBlockedInFlock(t *testing.T, path string) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	dev := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if blockedFlock(t, dev) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no waiter is blocked in flock on %s (/proc/locks, device %s)", path, dev)
		}
	}
}

// blockedFlock reads /proc/locks, where a blocked waiter's line is
// "N: -> FLOCK ADVISORY WRITE pid maj:min:inode 0 EOF".
func blockedFlock(t *testing.T, dev string) bool {
	f, err := os.Open("/proc/locks")
	if err != nil {
		t.Skipf("skipping: /proc/locks is needed to see a blocked waiter: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 7 && fields[1] == "->" && fields[2] == "FLOCK" && fields[6] == dev {
			return true
		}
	}
	return false
}

// A waiter sleeps in the kernel's flock queue, so the release itself wakes
// it: it is blocked in flock while the holder has the lock, and it takes
// the lock (bumping the hand-over counter) only after the release.
func TestLockWaiterBlocksInFlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := lockFile(path, time.Minute, realPacer)
	if err != nil {
		t.Fatal(err)
	}
	done := startWaiter(path, manualPacer(make(chan time.Time), nil)) // never ticks: it cannot give up
	waitBlockedInFlock(t, path)
	select {
	case r := <-done:
		t.Fatalf("the waiter returned while the lock was held: %v", r.err)
	default:
	}
	unlock()
	r := <-done
	if r.err != nil {
		t.Fatalf("waiter after the release: %v", r.err)
	}
	defer r.unlock()
	if n := counter(t, path); n != 2 {
		t.Fatalf("hand-over counter %d after the second holder, want 2", n)
	}
}

// A waiter keeps waiting while the lock changes hands (each holder bumps
// the hand-over counter), at every check, and gets the lock once it is
// free: under a burst the timeout must not fail calls while the node makes
// progress. Each tick is one check, and the lock changes hands once
// between two checks.
func TestLockWaitsWhileItChangesHands(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := lockFile(path, time.Minute, realPacer)
	if err != nil {
		t.Fatal(err)
	}
	holder, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	ticks, checked := make(chan time.Time), make(chan struct{})
	done := startWaiter(path, manualPacer(ticks, checked))
	waitBlockedInFlock(t, path)
	for i := range 10 {
		if err := markHandOver(holder); err != nil { // another holder took it
			t.Fatal(err)
		}
		ticks <- time.Now()
		select {
		case <-checked:
		case r := <-done:
			t.Fatalf("waiter gave up at check %d while the lock changed hands: %v", i, r.err)
		}
	}
	unlock()
	r := <-done
	if r.err != nil {
		t.Fatalf("waiter after the lock was freed: %v", r.err)
	}
	r.unlock()
}

// A holder that keeps the lock without handing it over is given up on at
// the first check that sees no hand-over; the waiter that gave up (its
// flock still blocked) must not keep the lock once the holder lets go.
func TestLockTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := lockFile(path, time.Minute, realPacer)
	if err != nil {
		t.Fatal(err)
	}
	ticks := make(chan time.Time)
	done := startWaiter(path, manualPacer(ticks, nil))
	waitBlockedInFlock(t, path)
	ticks <- time.Now()
	if r := <-done; !errors.Is(r.err, ErrLockTimeout) {
		t.Fatalf("waiter of a holder that never hands over: %v, want ErrLockTimeout", r.err)
	}
	unlock()
	// The abandoned flock gets the lock now and drops it at once; a new
	// waiter (whose holder never bumps the counter) must get it.
	next := startWaiter(path, manualPacer(make(chan time.Time), nil))
	r := <-next
	if r.err != nil {
		t.Fatalf("after unlock: %v", r.err)
	}
	r.unlock()
}

// With the real ticker a stuck holder is given up on no sooner than one
// timeout (no upper bound is asserted: the machine may be busy).
func TestLockTimeoutRealTicker(t *testing.T) {
	s, _ := Open(t.TempDir())
	unlock, err := s.LockBridge("br", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	start := time.Now()
	if _, err := s.LockBridge("br", 100*time.Millisecond); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("second lock: %v", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("gave up after %s, before the 100ms timeout", d)
	}
}

func counter(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return handOvers(f)
}
