package state

import (
	"errors"
	"os"
	"testing"
	"time"
)

// A record torn by a power loss, emptied, overwritten or written by a
// newer build is ErrUnreadable, naming its key and file; what precedes
// the damage is salvaged, a version this build does not read is named.
func TestUnreadableRecords(t *testing.T) {
	whole, err := encode(claim())
	if err != nil {
		t.Fatal(err)
	}
	cut := len(`{"version":2,"phase":"adding","containerID":"6f1c2d3e4f5a","ifname":"pod9a8b7c6d5e4",`)
	compact := []byte(`{"version":2,"phase":"adding","containerID":"6f1c2d3e4f5a","ifname":"pod9a8b7c6d5e4","network":"vmnet","bridge":"br-ext"}`)
	for _, c := range []struct {
		name        string
		data        []byte
		cid, ifname string
		version     int
	}{
		{"truncated", whole[:len(whole)/2], "6f1c2d3e4f5a", "pod9a8b7c6d5e4", 0},
		{"truncated mid-value", compact[:cut+len(`"network":"vm`)], "6f1c2d3e4f5a", "pod9a8b7c6d5e4", 0},
		{"empty", nil, "", "", 0},
		{"garbage", []byte("\x00\x17\xffnot json"), "", "", 0},
		{"null", []byte("null"), "", "", 0},
		{"empty object", []byte("{}"), "", "", 0},
		{"version 3", []byte(`{"version":3,"containerID":"c","ifname":"eth0"}`), "c", "eth0", 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, _ := Open(t.TempDir())
			if err := os.WriteFile(recordPath(s.Dir, "tbkey"), c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := s.Get("tbkey")
			e, ok := errors.AsType[*UnreadableError](err)
			if !ok || !errors.Is(err, ErrUnreadable) {
				t.Fatalf("Get: %v, want an UnreadableError", err)
			}
			if e.Key != "tbkey" || e.Path != recordPath(s.Dir, "tbkey") || e.Version != c.version {
				t.Errorf("error names key %q path %q version %d: %v", e.Key, e.Path, e.Version, err)
			}
			if e.Salvaged.ContainerID != c.cid || e.Salvaged.IfName != c.ifname || e.Salvaged.Key != "tbkey" {
				t.Errorf("salvaged %+v, want containerID %q ifname %q", e.Salvaged, c.cid, c.ifname)
			}
			if (c.version != 0) != errors.Is(err, ErrVersion) {
				t.Errorf("ErrVersion is %v for %v", errors.Is(err, ErrVersion), err)
			}
			lock, err := s.LockRecord("tbkey", time.Second)
			if err != nil {
				t.Fatalf("an unreadable record must still lock: %v", err)
			}
			lock.Unlock()
		})
	}
}
