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
