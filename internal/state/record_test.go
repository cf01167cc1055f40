package state

import (
	"bytes"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden records in testdata")

func intp(i int) *int { return &i }

// claim is what ADD writes first; ready what its last step publishes.
func claim() Record {
	return Record{
		Key: "6f1c2d3e4f5a-pod9a8b7c6d5e4", Version: Version, Phase: PhaseAdding,
		ContainerID: "6f1c2d3e4f5a", IfName: "pod9a8b7c6d5e4", Network: "vmnet", Bridge: "br-ext",
		Netns: "/var/run/netns/cni-1234", HostIf: "tb1a2b3c4d5e6f7", Tap: "tap9a8b7c6d5e4",
		MAC: "0a:58:ac:10:0d:0a", MTU: 1500, Pod: Pod{Namespace: "vms", Name: "virt-launcher-vm1-abcde"},
	}
}

func ready() Record {
	r := claim()
	r.Phase = PhaseReady
	r.IPs = []IP{
		{Address: netip.MustParsePrefix("172.16.13.10/24"), Gateway: netip.MustParseAddr("172.16.13.1")},
		{Address: netip.MustParsePrefix("2001:db8:13::10/64")},
	}
	r.Routes = []Route{
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), GW: netip.MustParseAddr("172.16.13.1")},
		{Dst: netip.MustParsePrefix("10.96.0.0/12"), GW: netip.MustParseAddr("172.16.13.254"), MTU: 1400, Priority: 100, Table: intp(100), Scope: intp(0)},
		{Dst: netip.MustParsePrefix("2001:db8:99::/48")},
	}
	r.DNS = DNS{
		Nameservers: []netip.Addr{netip.MustParseAddr("172.16.13.53"), netip.MustParseAddr("2001:db8:13::53")},
		Domain:      "vms.svc.cluster.local", Search: []string{"vms.svc.cluster.local", "cluster.local"},
		Options: []string{"ndots:5"},
	}
	return r
}

// served is a ready record of a network whose guests the node agent serves.
func served() Record {
	r := ready()
	r.DHCP = &DHCP{LeaseTime: 3600}
	return r
}

// learning is a ready record of a network whose guests' link-locals the
// node agent learns, without serving them addresses.
func learning() Record {
	r := ready()
	r.LearnLinkLocal = true
	return r
}

// The bytes on disk are the contract with readers: encoding a known
// record must give the golden file, and the golden file must decode to
// the record.
func TestGoldenRecords(t *testing.T) {
	for name, r := range map[string]Record{
		"record-v2-ready.json": ready(), "record-v2-claim.json": claim(), "record-v2-served.json": served(),
		"record-v2-learning.json": learning(),
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata", name)
			got, err := encode(r)
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to write it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoded record differs from %s:\n got %s\nwant %s", path, got, want)
			}
			back, err := decode(r.Key, want)
			if err != nil || !reflect.DeepEqual(back, r) {
				t.Fatalf("decode %s:\n got %+v (%v)\nwant %+v", path, back, err, r)
			}
		})
	}
}

// A record written before versioning (no "version", no phase, no
// addresses) is still read: DEL, GC and CHECK of an attachment made
// before an upgrade find what they need in it.
func TestVersion1Decodes(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "record-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := decode("k", data)
	if err != nil {
		t.Fatal(err)
	}
	want := Record{Key: "k", Version: 1, ContainerID: "6f1c2d3e4f5a", IfName: "pod9a8b7c6d5e4", Network: "vmnet",
		Bridge: "br-ext", Netns: "/var/run/netns/cni-1234", HostIf: "tb1a2b3c4d5e6f7", Tap: "tap9a8b7c6d5e4",
		MAC: "0a:58:ac:10:0d:0a"}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
	if r.Ready() {
		t.Fatal("a version 1 record says nothing of whether its ADD completed: it must not read as ready")
	}
}

func TestNewerVersionRefused(t *testing.T) {
	for _, doc := range []string{`{"version":3,"containerID":"c"}`, `{"version":-1,"containerID":"c"}`} {
		if _, err := decode("k", []byte(doc)); !errors.Is(err, ErrVersion) {
			t.Errorf("%s: %v, want ErrVersion", doc, err)
		}
	}
}

// Whatever Version a caller leaves in the Record, the current one is
// written.
func TestEncodeWritesCurrentVersion(t *testing.T) {
	r := claim()
	r.Version = 1
	data, err := encode(r)
	if err != nil {
		t.Fatal(err)
	}
	if back, err := decode("k", data); err != nil || back.Version != Version {
		t.Fatalf("version %d (%v), want %d", back.Version, err, Version)
	}
}
