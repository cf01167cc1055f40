package integration

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/internal/state"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// damage is what can happen to a record on disk. salvaged: its leading
// fields (containerID, ifname) can still be read, so GC can release its
// IPAM lease too.
type damage struct {
	name     string
	fn       func(t *testing.T, data []byte) []byte
	salvaged bool
}

var damages = []damage{
	{"truncated", func(_ *testing.T, b []byte) []byte { return b[:len(b)/2] }, true},
	{"empty", func(*testing.T, []byte) []byte { return nil }, false},
	{"garbage", func(*testing.T, []byte) []byte { return []byte("\x00\x13\xfe garbage {") }, false},
	{"version 3", func(t *testing.T, b []byte) []byte {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		m["version"] = 3
		out, _ := json.Marshal(m)
		return out
	}, true},
}

// damageRecord does d to a's record, in place.
func (f *fixture) damageRecord(a harness.Attachment, d damage) {
	f.t.Helper()
	path := state.NewReader(f.stateDir()).RecordPath(a.Names().Key)
	data, err := os.ReadFile(path)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(path, d.fn(f.t, data), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

// logged fails the test unless the plugin's log has a line with every word.
func (f *fixture) logged(words ...string) {
	f.t.Helper()
	data, _ := os.ReadFile(filepath.Join(f.dir, "plugin.log"))
	for _, line := range strings.Split(string(data), "\n") {
		if containsAll(line, words) {
			return
		}
	}
	f.t.Errorf("no log line with %q", words)
}

func containsAll(s string, words []string) bool {
	for _, w := range words {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

func (f *fixture) attachmentIn(cid string, pod harness.Netns) harness.Attachment {
	return harness.Attachment{CID: cid + "-" + f.node.ID, IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pod}
}

// DEL of an attachment whose record is unreadable tears it all down from
// the call (names, IPAM DEL) and the config (the bridge), removes the
// record and says which record it was.
func TestBadRecordDel(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			f := newFixture(t)
			conf := f.conf("1.1.0")
			a := f.attachmentIn("badrec-del", f.pod())
			before := f.snapshot()
			f.must(f.add(conf, a))
			f.damageRecord(a, d)
			f.must(f.del(conf, a))
			f.expectClean(before)
			f.logged("tearing down without the record", a.Names().Key)
			f.must(f.del(conf, a))
		})
	}
}

// GC tears down a stale attachment whose record is unreadable, by its key
// and whatever of the record hashes to it, without failing on it or on
// the others; a valid attachment keeps its links and its record. When the
// record no longer names the attachment, its IPAM lease and its TAP in a
// pod netns that still exists are left, and the log says so.
func TestBadRecordGC(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			f := newFixture(t)
			conf := f.conf("1.1.0")
			pods := f.pods(2)
			stale, valid := f.attachmentIn("badrec-stale", pods[0]), f.attachmentIn("badrec-valid", pods[1])
			before := f.snapshot()
			f.must(f.add(conf, stale))
			prev := f.must(f.add(conf, valid)).Stdout
			f.damageRecord(stale, d)

			f.must(f.call(harness.Call{Command: "GC", Stdin: gcConf(f, []*libcni.RuntimeConf{rtConf(valid.CID, valid.Pod, valid.IfName)})}))
			if !d.salvaged {
				f.logged("by its key alone", stale.Names().Key)
				f.dropLease(stale.CID)
				f.dropTap(stale)
			}
			f.expectLive([]harness.Attachment{valid}, pods)
			f.must(f.check(conf, prev, valid))
			f.must(f.del(conf, valid))
			f.expectClean(before)
		})
	}
}

// dropLease removes the one host-local lease of cid, which must exist.
func (f *fixture) dropLease(cid string) {
	f.t.Helper()
	dir, err := harness.ReadIPAMDir(f.ipamDir())
	if err != nil {
		f.t.Fatal(err)
	}
	for _, l := range dir.Leases {
		if l.ContainerID == cid {
			if err := os.Remove(filepath.Join(f.ipamDir(), l.Network, l.IP)); err != nil {
				f.t.Fatal(err)
			}
			return
		}
	}
	f.t.Errorf("no lease of %s left: %+v", cid, dir.Leases)
}

// dropTap removes a's TAP from its pod, where it must be.
func (f *fixture) dropTap(a harness.Attachment) {
	f.t.Helper()
	err := a.Pod.Do(func() error {
		l, err := netlink.LinkByName(a.Names().Tap)
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	})
	if err != nil {
		f.t.Errorf("TAP %s of %s: %v", a.Names().Tap, a.CID, err)
	}
}

// An unreadable record of an attachment the runtime lists as valid is
// left alone by GC, links and all.
func TestBadRecordOfValidAttachmentKept(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			f := newFixture(t)
			conf := f.conf("1.1.0")
			a := f.attachmentIn("badrec-kept", f.pod())
			before := f.snapshot()
			f.must(f.add(conf, a))
			f.damageRecord(a, d)
			path := state.NewReader(f.stateDir()).RecordPath(a.Names().Key)
			damaged, _ := os.ReadFile(path)

			f.must(f.call(harness.Call{Command: "GC", Stdin: gcConf(f, []*libcni.RuntimeConf{rtConf(a.CID, a.Pod, a.IfName)})}))
			if now, err := os.ReadFile(path); err != nil || string(now) != string(damaged) {
				t.Errorf("GC changed the record of a valid attachment: %v", err)
			}
			err := f.node.Host.Do(func() error { _, err := netlink.LinkByName(a.Names().HostIf); return err })
			if err != nil {
				t.Errorf("GC removed the host end of a valid attachment: %v", err)
			}
			f.must(f.del(conf, a))
			f.expectClean(before)
		})
	}
}

// CHECK of an attachment whose record is unreadable fails with 103 and
// names the record (and its version, when it is a newer one).
func TestBadRecordCheck(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			f := newFixture(t)
			conf := f.conf("1.1.0")
			a := f.attachmentIn("badrec-check", f.pod())
			before := f.snapshot()
			prev := f.must(f.add(conf, a)).Stdout
			f.damageRecord(a, d)
			out, err := f.check(conf, prev, a)
			if err != nil {
				t.Fatal(err)
			}
			var e types.Error
			if err := decodeCNIError(out.Stdout, &e); err != nil || e.Code != 103 || !strings.Contains(e.Msg, a.Names().Key) {
				t.Fatalf("CHECK: rc %d %s, want code 103 naming record %s", out.RC, out.Stdout, a.Names().Key)
			}
			if d.name == "version 3" && !strings.Contains(e.Msg, "version 3") {
				t.Errorf("CHECK of a version 3 record does not name the version: %s", e.Msg)
			}
			f.must(f.del(conf, a))
			f.expectClean(before)
		})
	}
}

// Networks that share a dataDir share its records: GC of one network
// leaves alone another's unreadable record, told by its salvaged network
// or, when nothing of it can be read, by its host end's bridge.
func TestBadRecordOfAnotherNetworkKept(t *testing.T) {
	for _, d := range []damage{damages[0], damages[1]} {
		t.Run(d.name, func(t *testing.T) {
			f := newFixture(t)
			f.addBridge("br-other")
			other := f.conf("1.1.0", set("name", "othernet"), set("bridge", "br-other"))
			a := f.attachmentIn("badrec-other", f.pod())
			a.Network, a.Bridge = "othernet", "br-other"
			before := f.snapshot()
			f.must(f.add(other, a))
			f.damageRecord(a, d)

			f.must(f.call(harness.Call{Command: "GC", Stdin: gcConf(f, nil)}))
			if _, err := os.Stat(state.NewReader(f.stateDir()).RecordPath(a.Names().Key)); err != nil {
				t.Errorf("GC of vmnet removed othernet's record: %v", err)
			}
			err := f.node.Host.Do(func() error { _, err := netlink.LinkByName(a.Names().HostIf); return err })
			if err != nil {
				t.Errorf("GC of vmnet removed othernet's host end: %v", err)
			}
			f.must(f.del(other, a))
			f.expectClean(before)
		})
	}
}

// After a "reboot" (the pod netns gone, and the host end with it), GC
// still collects a stale unreadable record: with no link left to tell its
// network by, it is this network's.
func TestBadRecordGCAfterReboot(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			f := newFixture(t)
			conf := f.conf("1.1.0")
			pod := f.pods(1)[0]
			stale := f.attachmentIn("badrec-reboot", pod)
			before := f.snapshot()
			f.must(f.add(conf, stale))
			f.damageRecord(stale, d)
			if err := pod.Delete(); err != nil {
				t.Fatal(err)
			}
			// The kernel frees a netns, and the veth with it, a little later.
			f.waitFor(10*time.Second, "host end gone with the pod netns", func() bool {
				var err error
				_ = f.node.Host.Do(func() error { _, err = netlink.LinkByName(stale.Names().HostIf); return nil })
				return errors.As(err, new(netlink.LinkNotFoundError))
			})
			f.must(f.call(harness.Call{Command: "GC", Stdin: gcConf(f, nil)}))
			if _, err := state.NewReader(f.stateDir()).Record(stale.Names().Key); !errors.Is(err, state.ErrNotFound) {
				t.Fatalf("the stale unreadable record is still there after GC: %v", err)
			}
			if !d.salvaged {
				f.dropLease(stale.CID)
			}
			f.expectClean(before.Without(pod.Name))
		})
	}
}
