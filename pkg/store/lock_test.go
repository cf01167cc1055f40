package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A waiter keeps waiting while the lock changes hands (each holder bumps
// the hand-over counter), even past its timeout, and gets the lock once
// it is free: under a burst the timeout must not fail calls while the
// node makes progress.
func TestLockWaitsWhileItChangesHands(t *testing.T) {
	s, _ := Open(t.TempDir())
	unlock, err := s.LockBridge("br", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(s.BridgeDir("br"), "lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		u, err := s.LockBridge("br", 150*time.Millisecond)
		if err == nil {
			u()
		}
		done <- err
	}()
	for i := 0; i < 10; i++ { // ten hand-overs, 60 ms apart: 600 ms in all
		time.Sleep(60 * time.Millisecond)
		if err := markHandOver(f); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("waiter gave up after %s while the lock changed hands: %v", time.Since(start), err)
	default:
	}
	unlock()
	if err := <-done; err != nil {
		t.Fatalf("waiter after the lock was freed: %v", err)
	}
}

// A holder that keeps the lock without handing it over is given up on
// after the timeout; the waiter that gave up does not take the lock
// later, when the holder lets go.
func TestLockTimesOutOnAStuckHolder(t *testing.T) {
	s, _ := Open(t.TempDir())
	unlock, err := s.LockBridge("br", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := s.LockBridge("br", 100*time.Millisecond); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("waiter on a stuck holder: %v, want ErrLockTimeout", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > time.Second {
		t.Fatalf("gave up after %s, want about 100ms", d)
	}
	unlock()
	u, err := s.LockBridge("br", time.Second)
	if err != nil {
		t.Fatalf("lock after the holder let go: %v (did the waiter that gave up keep it?)", err)
	}
	u()
}

// Waiters are woken as soon as the holder lets go, not at their next poll.
func TestLockHandOverIsPrompt(t *testing.T) {
	s, _ := Open(t.TempDir())
	unlock, err := s.LockBridge("br", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan time.Time, 1)
	go func() {
		u, err := s.LockBridge("br", 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- time.Now()
		u()
	}()
	time.Sleep(300 * time.Millisecond) // the waiter is blocked by now
	released := time.Now()
	unlock()
	if d := (<-got).Sub(released); d > 50*time.Millisecond {
		t.Fatalf("waiter took the lock %s after it was released", d)
	}
}
