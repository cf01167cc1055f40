package integration

import (
	"fmt"
	"net"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// A link that already has one of an attachment's names is somebody
// else's: ADD fails with 101 without taking it, and the DEL every runtime
// sends for a failed ADD, then a GC, leave it exactly as it was.
func TestForeignLinksLeftAlone(t *testing.T) {
	foreignMAC := net.HardwareAddr{0x02, 0xf0, 0xf0, 0xf0, 0xf0, 0x01}
	for _, c := range []struct {
		name string
		in   func(f *fixture, a harness.Attachment) harness.Netns // where the link is made
		link func(a harness.Attachment) netlink.Link
	}{
		{"veth named like the host end",
			func(f *fixture, _ harness.Attachment) harness.Netns { return f.node.Host },
			func(a harness.Attachment) netlink.Link {
				return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a.Names().HostIf, HardwareAddr: foreignMAC}, PeerName: "fpeer0"}
			}},
		{"tap named like the host end",
			func(f *fixture, _ harness.Attachment) harness.Netns { return f.node.Host },
			func(a harness.Attachment) netlink.Link { return foreignTap(a.Names().HostIf) }},
		{"tap named like the TAP",
			func(_ *fixture, a harness.Attachment) harness.Netns { return a.Pod },
			func(a harness.Attachment) netlink.Link { return foreignTap(a.Names().Tap) }},
		{"veth named like the pod end",
			func(_ *fixture, a harness.Attachment) harness.Netns { return a.Pod },
			func(a harness.Attachment) netlink.Link {
				return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a.IfName, HardwareAddr: foreignMAC}, PeerName: "peer0"}
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			conf := f.conf("1.1.0")
			a := harness.Attachment{CID: "foreign-" + f.node.ID, IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, Pod: f.pod()}
			in, l := c.in(f, a), c.link(a)
			if err := in.Do(func() error { return netlink.LinkAdd(l) }); err != nil {
				t.Fatalf("make the foreign link: %v", err)
			}
			made := linkID(t, in, l.Attrs().Name)
			before := f.snapshot()

			out := f.exec(harness.Call{Command: "ADD", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Stdin: conf})
			var e types.Error
			if err := decodeCNIError(out.Stdout, &e); err != nil || e.Code != 101 {
				t.Fatalf("ADD over a foreign %s: rc %d %s, want code 101", l.Attrs().Name, out.RC, out.Stdout)
			}
			f.must(f.del(conf, a))
			f.must(f.call(harness.Call{Command: "GC", Stdin: gcConf(f, nil)}))

			if got := linkID(t, in, l.Attrs().Name); got != made {
				t.Errorf("foreign link changed: %s, was %s", got, made)
			}
			f.expectClean(before)
		})
	}
}

// foreignTap is a persistent TAP in link group 0, as anyone makes one.
func foreignTap(name string) netlink.Link {
	return &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TAP}
}

// linkID tells a link apart from one of the same name made since.
func linkID(t *testing.T, in harness.Netns, name string) string {
	t.Helper()
	var id string
	err := in.Do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		a := l.Attrs()
		id = fmt.Sprintf("%s #%d %s group %d", l.Type(), a.Index, a.HardwareAddr, a.Group)
		return nil
	})
	if err != nil {
		t.Fatalf("foreign link %s: %v", name, err)
	}
	return id
}
