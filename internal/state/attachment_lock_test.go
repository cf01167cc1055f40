package state

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A waiter queued on an attachment's lock while its holder removes it
// (the attachment is gone) ends up holding the file now at the path, not
// the unlinked one, so a third caller is kept out.
func TestAttachmentLockAfterRemove(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.LockAttachment("k", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *AttachmentLock, 1)
	go func() {
		l, err := s.LockAttachment("k", time.Minute)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitQueued(t)
	if err := first.Remove(); err != nil {
		t.Fatal(err)
	}
	first.Unlock()
	second := <-got
	if second == nil {
		t.FailNow()
	}
	if !stillAt(second.File(), second.path) {
		t.Fatal("the waiter holds the unlinked lock file")
	}
	if _, err := s.LockAttachment("k", 50*time.Millisecond); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("a third caller while the second holds it: %v, want ErrLockTimeout", err)
	}
	if err := second.Remove(); err != nil {
		t.Fatal(err)
	}
	second.Unlock()
	if _, err := os.Stat(lockPathOf(s.Dir, "k")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock file after Remove: %v", err)
	}
}

// waitQueued waits until a goroutine of this process is queued for a
// flock ("->" in /proc/locks).
func waitQueued(t *testing.T) {
	t.Helper()
	pid := strconv.Itoa(os.Getpid())
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		locks, _ := os.ReadFile("/proc/locks")
		for _, line := range strings.Split(string(locks), "\n") {
			if f := strings.Fields(line); len(f) > 5 && f[1] == "->" && f[5] == pid {
				return
			}
		}
	}
	t.Fatal("the waiter never queued for the lock")
}
