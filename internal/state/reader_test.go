package state

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
)

// A reader sees claims and complete records, told apart by Ready, and
// the bridges' subnets with their users and owned address.
func TestReaderClaimAndReady(t *testing.T) {
	s, _ := Open(t.TempDir())
	if err := createUnlocked(s, "a", claim()); err != nil {
		t.Fatal(err)
	}
	if err := createUnlocked(s, "b", claim()); err != nil {
		t.Fatal(err)
	}
	if err := s.Publish("b", ready()); err != nil {
		t.Fatal(err)
	}
	r := NewReader(s.Dir)
	recs, err := r.Records()
	if err != nil || len(recs) != 2 {
		t.Fatalf("records: %+v %v", recs, err)
	}
	if recs[0].Key != "a" || recs[0].Ready() || recs[0].Phase != PhaseAdding || recs[1].Key != "b" || !recs[1].Ready() {
		t.Fatalf("want the claim a and the ready b: %+v", recs)
	}
	want := ready()
	want.Key = "b"
	if got, err := r.Record("b"); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("record b: %+v %v", got, err)
	}
	if _, err := r.Record("none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing record: %v", err)
	}
}

func TestReaderSubnets(t *testing.T) {
	s, _ := Open(t.TempDir())
	br := s.Bridge("br-ext")
	owned := br.Subnet(netip.MustParsePrefix("10.0.0.0/24"))
	admin := br.Subnet(netip.MustParsePrefix("2001:db8::/64"))
	for _, k := range []string{"k2", "k1"} {
		if err := owned.Users().Add(k); err != nil {
			t.Fatal(err)
		}
	}
	if err := owned.CreateOwned(netip.MustParsePrefix("10.0.0.250/24")); err != nil {
		t.Fatal(err)
	}
	if err := admin.Users().Add("k1"); err != nil {
		t.Fatal(err)
	}
	r := NewReader(s.Dir)
	if bridges, err := r.Bridges(); err != nil || !reflect.DeepEqual(bridges, []string{"br-ext"}) {
		t.Fatalf("bridges: %v %v", bridges, err)
	}
	got, err := r.Subnets("br-ext")
	want := []SubnetView{
		{Subnet: netip.MustParsePrefix("10.0.0.0/24"), Users: []string{"k1", "k2"}, Owned: netip.MustParsePrefix("10.0.0.250/24")},
		{Subnet: netip.MustParsePrefix("2001:db8::/64"), Users: []string{"k1"}},
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("subnets:\n got %+v %v\nwant %+v", got, err, want)
	}
	if n, err := r.HandOvers("br-ext"); n != 0 || err != nil {
		t.Fatalf("hand-overs of a never-locked bridge: %d %v", n, err)
	}
	unlock, err := br.Lock(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	if n, err := r.HandOvers("br-ext"); n != 1 || err != nil {
		t.Fatalf("hand-overs after one lock: %d %v", n, err)
	}
}

// A record that goes between the listing and the read is skipped, not an
// error. A name that lists but does not open (a dangling link) is that
// instant, made to last.
func TestReaderSkipsVanishedRecord(t *testing.T) {
	s, _ := Open(t.TempDir())
	if err := createUnlocked(s, "a", claim()); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("gone", filepath.Join(recordDir(s.Dir), "b.json")); err != nil {
		t.Fatal(err)
	}
	recs, err := NewReader(s.Dir).Records()
	if err != nil || len(recs) != 1 || recs[0].Key != "a" {
		t.Fatalf("records: %+v %v", recs, err)
	}
}

// A reader of a node where no plugin ran yet sees nothing, and creates
// nothing.
func TestReaderOfEmptyDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	r := NewReader(dir)
	recs, err := r.Records()
	bridges, err2 := r.Bridges()
	subnets, err3 := r.Subnets("br")
	if recs != nil || bridges != nil || subnets != nil || errors.Join(err, err2, err3) != nil {
		t.Fatalf("%v %v %v: %v %v %v", recs, bridges, subnets, err, err2, err3)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the reader created %s: %v", dir, err)
	}
}

// Readers run alongside a writer that claims, publishes and deletes
// records over and over: every record they see decodes and is either a
// claim (no addresses) or complete, never torn or a mix.
func TestReaderWithConcurrentWriter(t *testing.T) {
	s, _ := Open(t.TempDir())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			key := fmt.Sprintf("k%d", i%4)
			_ = s.Delete(key)
			if err := createUnlocked(s, key, claim()); err != nil {
				t.Error(err)
				return
			}
			if err := s.Publish(key, ready()); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	r := NewReader(s.Dir)
	seen := map[Phase]int{}
	for i := 0; i < 300 || seen[PhaseAdding] == 0 || seen[PhaseReady] == 0; i++ {
		if t.Failed() || i == 100000 {
			close(stop)
			wg.Wait()
			t.Fatalf("after %d listings (writer failed: %v), records seen by phase: %v", i, t.Failed(), seen)
		}
		recs, err := r.Records()
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("listing %d: %v", i, err)
		}
		for _, rec := range recs {
			seen[rec.Phase]++
			if !wellFormed(rec) {
				close(stop)
				wg.Wait()
				t.Fatalf("listing %d: torn or mixed record %+v", i, rec)
			}
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("records seen by phase: %v", seen)
}

func wellFormed(r Record) bool {
	want := claim()
	if r.Ready() {
		want = ready()
	}
	want.Key = r.Key
	return reflect.DeepEqual(r, want)
}
