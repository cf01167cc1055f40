package state

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A caller queued on an attachment's record while the ADD holding the
// claim publishes the complete record ends up holding the published
// record, not the replaced claim, so a third caller is kept out; the
// claim is locked from the moment it exists.
func TestRecordLockFollowsPublish(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	claim, err := s.Create("k", Record{ContainerID: "c", IfName: "eth0", Phase: PhaseAdding})
	if err != nil {
		t.Fatal(err)
	}
	if !lockedBy(recordPath(s.Dir, "k")) {
		t.Fatal("the claim is not locked once it exists")
	}
	got := queueLock(t, s, "k")
	if err := s.Publish("k", Record{ContainerID: "c", IfName: "eth0", Phase: PhaseReady}); err != nil {
		t.Fatal(err)
	}
	claim.Unlock()
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !stillAt(r.lock.File(), recordPath(s.Dir, "k")) {
		t.Fatal("the waiter holds the replaced claim, not the published record")
	}
	if _, err := s.LockRecord("k", 50*time.Millisecond); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("a third caller while the second holds it: %v, want ErrLockTimeout", err)
	}
	r.lock.Unlock()
}

// A caller queued while the holder removes the record (DEL) is told there
// is no record.
func TestRecordLockAfterDelete(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	held, err := s.Create("k", Record{ContainerID: "c", IfName: "eth0", Phase: PhaseAdding})
	if err != nil {
		t.Fatal(err)
	}
	got := queueLock(t, s, "k")
	if err := s.Delete("k"); err != nil {
		t.Fatal(err)
	}
	held.Unlock()
	if r := <-got; !errors.Is(r.err, ErrNotFound) {
		t.Fatalf("lock of a deleted record: %v, want ErrNotFound", r.err)
	}
}

type recordLockResult struct {
	lock *RecordLock
	err  error
}

// queueLock starts LockRecord(key) and returns once it is queued behind
// the current holder ("->" for this process in /proc/locks).
func queueLock(t *testing.T, s *Store, key string) <-chan recordLockResult {
	t.Helper()
	got := make(chan recordLockResult, 1)
	go func() {
		l, err := s.LockRecord(key, time.Minute)
		got <- recordLockResult{l, err}
	}()
	pid := strconv.Itoa(os.Getpid())
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		locks, _ := os.ReadFile("/proc/locks")
		for _, line := range strings.Split(string(locks), "\n") {
			if f := strings.Fields(line); len(f) > 5 && f[1] == "->" && f[5] == pid {
				return got
			}
		}
	}
	t.Fatal("the waiter never queued for the lock")
	return nil
}

// createUnlocked is Create for tests that do not need the lock.
func createUnlocked(s *Store, key string, r Record) error {
	l, err := s.Create(key, r)
	l.Unlock()
	return err
}

// lockedBy reports whether the record file is flocked by anyone (tests).
func lockedBy(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		return true
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}
