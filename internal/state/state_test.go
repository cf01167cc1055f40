package state

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestRecords(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := Record{Phase: PhaseAdding, ContainerID: "c", IfName: "eth0", Network: "n", Bridge: "br"}
	if err := createUnlocked(s, "k1", r); err != nil {
		t.Fatal(err)
	}
	if err := createUnlocked(s, "k1", r); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	got, err := s.Get("k1")
	if err != nil || got.Key != "k1" || got.ContainerID != "c" || got.Version != Version || got.Phase != PhaseAdding {
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
			if createUnlocked(s, "k", Record{ContainerID: "c"}) == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	entries, _ := os.ReadDir(recordDir(s.Dir))
	if wins != 1 || len(entries) != 1 {
		t.Fatalf("%d winners, %d files", wins, len(entries))
	}
}

func TestSet(t *testing.T) {
	set := Set{dir: filepath.Join(t.TempDir(), "users")}
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
	if _, err := os.Stat(set.dir); !os.IsNotExist(err) {
		t.Fatal("an empty set must leave no directory")
	}
	if empty, err := set.Remove("b"); err != nil || !empty {
		t.Fatalf("remove from a gone set: %v %v", empty, err)
	}
}

// Publish replaces the claim whole and leaves no staged file; Delete
// removes a staged record a crash left, and Keys never lists it.
func TestPublish(t *testing.T) {
	s, _ := Open(t.TempDir())
	claim := Record{Phase: PhaseAdding, ContainerID: "c", IfName: "eth0"}
	if err := createUnlocked(s, "k", claim); err != nil {
		t.Fatal(err)
	}
	ready := claim
	ready.Phase = PhaseReady
	ready.IPs = []IP{{Address: netip.MustParsePrefix("10.0.0.5/24")}}
	if err := s.Publish("k", ready); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get("k")
	if err != nil || !got.Ready() || len(got.IPs) != 1 {
		t.Fatalf("after publish: %+v %v", got, err)
	}
	if names := dirNames(t, recordDir(s.Dir)); len(names) != 1 || names[0] != "k.json" {
		t.Fatalf("files after publish: %v", names)
	}
	if err := createUnlocked(s, "k", claim); !errors.Is(err, ErrExists) {
		t.Fatalf("claim over a ready record: %v", err)
	}
	// A crash after staging, before the rename.
	if err := stage(stagedPath(s.Dir, "k"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if keys, _ := s.Keys(); len(keys) != 1 || keys[0] != "k" {
		t.Fatalf("keys with a staged record: %v", keys)
	}
	if err := s.Delete("k"); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, recordDir(s.Dir)); len(names) != 0 {
		t.Fatalf("files after delete: %v", names)
	}
}

// An owned address is created once and removed with the subnet's
// directory; the layout is the one crash tests and older nodes know.
func TestSubnetOwned(t *testing.T) {
	s, _ := Open(t.TempDir())
	sub := s.Bridge("br0").Subnet(netip.MustParsePrefix("10.0.0.7/24"))
	if sub.Prefix != netip.MustParsePrefix("10.0.0.0/24") {
		t.Fatalf("subnet %s is not masked", sub.Prefix)
	}
	if _, ok, err := sub.Owned(); ok || err != nil {
		t.Fatalf("owned before any: %v %v", ok, err)
	}
	p := netip.MustParsePrefix("10.0.0.250/24")
	if err := sub.CreateOwned(p); err != nil {
		t.Fatal(err)
	}
	if err := sub.CreateOwned(p); !errors.Is(err, ErrExists) {
		t.Fatalf("second owned: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(s.Dir, "bridges", "br0", "subnets", "10.0.0.0_24", "owned"))
	if err != nil || string(data) != "10.0.0.250/24\n" {
		t.Fatalf("owned file: %q %v", data, err)
	}
	if err := sub.Users().Add("k"); err != nil {
		t.Fatal(err)
	}
	if !fileExists(filepath.Join(s.Dir, "bridges", "br0", "subnets", "10.0.0.0_24", "users", "k")) {
		t.Fatal("user k is not users/k in the subnet's directory")
	}
	subs, err := s.Bridge("br0").Subnets()
	if err != nil || len(subs) != 1 || subs[0] != sub {
		t.Fatalf("subnets: %v %v", subs, err)
	}
	if got, ok, err := sub.Owned(); got != p || !ok || err != nil {
		t.Fatalf("owned: %v %v %v", got, ok, err)
	}
	if _, err := sub.Users().Remove("k"); err != nil {
		t.Fatal(err)
	}
	if err := sub.RemoveOwned(); err != nil {
		t.Fatal(err)
	}
	if subs, _ := s.Bridge("br0").Subnets(); len(subs) != 0 {
		t.Fatalf("subnets after the last release: %v", subs)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
