package store

import (
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
