package harness

import (
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A static forwarding entry left on the bridge is a difference the
// snapshot sees (RELIABILITY's Snapshot lists them); learned and
// multicast entries are not.
func TestSnapshotSeesStaticFDB(t *testing.T) {
	RequireRoot(t)
	n, err := NewNetns(RunID("tbh"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Delete(); err != nil {
			t.Error(err)
		}
	})
	var before, after Kernel
	err = n.Do(func() error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		port := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "p0"}, PeerName: "p1"}
		for _, l := range []netlink.Link{br, port} {
			if err := netlink.LinkAdd(l); err != nil {
				return err
			}
		}
		if err := netlink.LinkSetMaster(port, br); err != nil {
			return err
		}
		if before, err = readKernel(true, []string{"br0"}); err != nil {
			return err
		}
		p0, err := netlink.LinkByName("p0")
		if err != nil {
			return err
		}
		mac := net.HardwareAddr{0x02, 0xfd, 0, 0, 0, 1}
		if err := netlink.NeighAppend(&netlink.Neigh{LinkIndex: p0.Attrs().Index, Family: unix.AF_BRIDGE,
			State: unix.NUD_NOARP, Flags: netlink.NTF_MASTER, HardwareAddr: mac}); err != nil {
			return err
		}
		after, err = readKernel(true, []string{"br0"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	diff := State{Host: before}.Diff(State{Host: after})
	if !strings.Contains(diff, "fdb br0") || !strings.Contains(diff, "02:fd:00:00:00:01 p0") {
		t.Fatalf("a static fdb entry was added; the diff says:\n%s", diff)
	}
}
