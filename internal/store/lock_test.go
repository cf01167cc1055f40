package store

import (
	"os"
	"path/filepath"
	"slices"
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
// A poller whose sleep has grown to its 20 ms cap takes the lock up to
// 20 ms after a release (the previous polling lock: a median of 19–20 ms
// here), so the median of nine hand-overs tells the two apart; one slow
// wake-up on a busy machine does not fail the test.
func TestLockHandOverIsPrompt(t *testing.T) {
	s, _ := Open(t.TempDir())
	var delays []time.Duration
	for range 9 {
		unlock, err := s.LockBridge("br", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan time.Time, 1)
		go func() {
			u, err := s.LockBridge("br", 5*time.Second)
			got <- time.Now()
			if err != nil {
				t.Error(err)
				return
			}
			u()
		}()
		time.Sleep(50 * time.Millisecond) // the waiter is blocked (or polling at its cap) by now
		released := time.Now()
		unlock()
		delays = append(delays, (<-got).Sub(released))
	}
	slices.Sort(delays)
	if median := delays[len(delays)/2]; median > 5*time.Millisecond {
		t.Fatalf("waiters took the lock a median %s after its release (all: %v)", median, delays)
	}
}
