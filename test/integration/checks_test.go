package integration

import (
	"strings"
	"testing"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// The node-state checks themselves can fail: with one attachment left
// behind, the LIVE(0) check names every piece of it and the CLEAN diff
// sees it; LIVE(1) passes; a held lock is reported.
func TestChecksSeeLeftovers(t *testing.T) {
	f := newFixture(t)
	pod := f.pod()
	conf := f.conf("1.1.0")
	before := f.snapshot()
	a := harness.Attachment{CID: "chk-" + f.node.ID, IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pod}
	f.must(f.add(conf, a))

	err := f.liveErr(nil, []harness.Netns{pod})
	if err == nil {
		t.Fatal("LIVE(0) passed with an attachment left")
	}
	for _, want := range []string{
		"host veth " + a.Names().HostIf, "bridge " + harness.BridgeName + " has addresses", "nft table netdev tapbridge-" + a.Names().HostIf,
		"record " + a.Names().Key, "host-address user of no live attachment", "IPAM holds 1 IPs", "stray device " + a.Names().Tap,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("LIVE(0) does not say %q:\n%v", want, err)
		}
	}
	if d := before.Diff(f.snapshot()); !strings.Contains(d, "host links") || !strings.Contains(d, "nft") ||
		!strings.Contains(d, "addrs "+harness.BridgeName) || !strings.Contains(d, "files state") || !strings.Contains(d, "files ipam") {
		t.Errorf("CLEAN diff misses part of the attachment:\n%s", d)
	}
	f.expectLive([]harness.Attachment{a}, []harness.Netns{pod})

	lock, err := harness.OpenBridgeLock(f.stateDir(), harness.BridgeName)
	if err != nil {
		t.Fatal(err)
	}
	err = lock.Hold(func() error { return f.liveErr([]harness.Attachment{a}, nil) })
	lock.Close()
	if err == nil || !strings.Contains(err.Error(), "is held") {
		t.Errorf("LIVE(1) with the bridge lock held: %v, want the lock reported", err)
	}

	f.must(f.del(conf, a))
	f.expectLive(nil, []harness.Netns{pod})
	f.expectClean(before)
}
