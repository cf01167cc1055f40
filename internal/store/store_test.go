package store

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestRecords(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := Record{ContainerID: "c", IfName: "eth0", Network: "n", Bridge: "br"}
	if err := s.Create("k1", r); err != nil {
		t.Fatal(err)
	}
	if err := s.Create("k1", r); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	got, err := s.Get("k1")
	if err != nil || got != r {
		t.Fatalf("get: %+v %v", got, err)
	}
	if keys, _ := s.Keys(); len(keys) != 1 || keys[0] != "k1" {
		t.Fatalf("keys: %v", keys)
	}
	if err := s.Delete("k1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("k1"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := s.Get("k1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

// Concurrent creates of one key: exactly one wins, no temporary files.
func TestCreateRace(t *testing.T) {
	s, _ := Open(t.TempDir())
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.Create("k", Record{ContainerID: "c"}) == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	entries, _ := os.ReadDir(s.recordDir())
	if wins != 1 || len(entries) != 1 {
		t.Fatalf("%d winners, %d files", wins, len(entries))
	}
}

func TestSet(t *testing.T) {
	set := Set{Dir: filepath.Join(t.TempDir(), "users")}
	for _, k := range []string{"a", "b", "a"} {
		if err := set.Add(k); err != nil {
			t.Fatal(err)
		}
	}
	if empty, err := set.Remove("a"); err != nil || empty {
		t.Fatalf("remove a: %v %v", empty, err)
	}
	if empty, err := set.Remove("a"); err != nil || empty {
		t.Fatalf("remove a again: %v %v", empty, err)
	}
	if empty, err := set.Remove("b"); err != nil || !empty {
		t.Fatalf("remove last: %v %v", empty, err)
	}
	if _, err := os.Stat(set.Dir); !os.IsNotExist(err) {
		t.Fatal("an empty set must leave no directory")
	}
	if empty, err := set.Remove("b"); err != nil || !empty {
		t.Fatalf("remove from a gone set: %v %v", empty, err)
	}
}

// A holder that keeps the lock without handing it over is given up on
// after the timeout; the waiter that gave up (its flock still blocked)
// must not keep the lock once the holder lets go.
func TestLockTimeout(t *testing.T) {
	s, _ := Open(t.TempDir())
	unlock, err := s.LockBridge("br", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := s.LockBridge("br", 100*time.Millisecond); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("second lock: %v", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > time.Second {
		t.Fatalf("timeout took %s, want about 100ms", d)
	}
	unlock()
	unlock2, err := s.LockBridge("br", 100*time.Millisecond)
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	unlock2()
}
