package integration

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/internal/attachment"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// E3: valid MTUs reach the TAP and both veth ends; invalid ones are
// refused with code 7 before anything exists.
func TestMTU(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		mtu, want int
		code      uint
	}{{0, 1500, 0}, {1500, 1500, 0}, {1400, 1400, 0}, {9000, 0, 7}, {65535, 0, 7}, {67, 0, 7}} {
		t.Run(fmt.Sprint(c.mtu), func(t *testing.T) {
			pod := f.pod()
			before := f.snapshot()
			conf := f.conf("1.1.0", func(m map[string]any) { m["mtu"] = c.mtu })
			call := harness.Call{Command: "ADD", ContainerID: "cid-e3", Netns: pod.Path(), IfName: "eth0", Stdin: conf}
			out := f.exec(call)
			if c.code != 0 {
				if out.RC == 0 || out.Err.Code != c.code || !strings.Contains(out.Err.Msg, "mtu") {
					t.Fatalf("mtu %d: rc %d %s", c.mtu, out.RC, out.Stdout)
				}
				f.expectClean(before)
				return
			}
			if out.RC != 0 {
				t.Fatalf("mtu %d: %s", c.mtu, out.Stdout)
			}
			names := attachment.For(attachment.ID{ContainerID: "cid-e3", IfName: "eth0"})
			f.expectMTU(f.node.Host, names.HostIf, c.want)
			f.expectMTU(pod, "eth0", c.want)
			f.expectMTU(pod, names.Tap, c.want)
			call.Command = "DEL"
			if out := f.exec(call); out.RC != 0 {
				t.Fatal(string(out.Stdout))
			}
			f.expectClean(before)
		})
	}
}

func (f *fixture) expectMTU(ns harness.Netns, name string, want int) {
	f.t.Helper()
	err := ns.Do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if l.Attrs().MTU != want {
			return fmt.Errorf("%s has MTU %d, want %d", name, l.Attrs().MTU, want)
		}
		return nil
	})
	if err != nil {
		f.t.Error(err)
	}
}

// E4: a link that already has one of our names is neither stolen nor
// deleted; ADD says whose name it is (code 101) and creates nothing.
func TestNameTaken(t *testing.T) {
	f := newFixture(t)
	id := attachment.ID{ContainerID: "cid-e4", IfName: "eth0"}
	names := attachment.For(id)
	cases := []struct {
		name  string
		where func(pod harness.Netns) harness.Netns
		link  string
	}{
		{"host veth name", func(harness.Netns) harness.Netns { return f.node.Host }, names.HostIf},
		{"tap name", func(pod harness.Netns) harness.Netns { return pod }, names.Tap},
		{"pod ifname", func(pod harness.Netns) harness.Netns { return pod }, "eth0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pod := f.pod()
			ns := c.where(pod)
			err := ns.Do(func() error {
				return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: c.link}, PeerName: "foreign0"})
			})
			if err != nil {
				t.Fatal(err)
			}
			before := f.snapshot()
			out := f.exec(harness.Call{Command: "ADD", ContainerID: id.ContainerID, Netns: pod.Path(), IfName: "eth0", Stdin: f.conf("1.1.0")})
			if out.RC == 0 || out.Err.Code != 101 || !strings.Contains(out.Err.Msg, "already in use") {
				t.Fatalf("ADD over a foreign %s: rc %d %s", c.link, out.RC, out.Stdout)
			}
			f.expectClean(before)
			if err := ns.Do(func() error { return delLink(c.link) }); err != nil {
				t.Fatalf("the foreign link is gone: %v", err)
			}
		})
	}
}

// E8: a missing bridge, a bridge name that is a veth, a bridge that is
// down: ADD names the bridge, uses the documented code, creates nothing.
func TestBadBridge(t *testing.T) {
	f := newFixture(t)
	pod := f.pod()
	before := f.snapshot()
	cases := []struct {
		name, bridge string
		down         bool
		code         uint
	}{
		{"missing", "br-nope", false, 11},
		{"not a bridge", "hp0", false, 7},
		{"down", harness.BridgeName, true, 11},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.down {
				setBridge(t, f, false)
				defer setBridge(t, f, true)
			}
			conf := f.conf("1.1.0", func(m map[string]any) { m["bridge"] = c.bridge })
			out := f.exec(harness.Call{Command: "ADD", ContainerID: "cid-e8", Netns: pod.Path(), IfName: "eth0", Stdin: conf})
			if out.RC == 0 || out.Err.Code != c.code || !strings.Contains(out.Err.Msg, c.bridge) {
				t.Fatalf("rc %d %s, want code %d naming %s", out.RC, out.Stdout, c.code, c.bridge)
			}
		})
	}
	f.expectClean(before)
}

// E7: the kernel numbers bridge ports 1..1023. With the bridge full, ADD
// says so (code 102) and leaves nothing behind.
func TestBridgeFull(t *testing.T) {
	f := newFixture(t)
	pod := f.pod()
	err := f.node.Host.Do(func() error {
		br, err := netlink.LinkByName(harness.BridgeName)
		if err != nil {
			return err
		}
		for i := 0; ; i++ { // hp0 is port 1; fill the rest
			v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("fill%d", i), MasterIndex: br.Attrs().Index}, PeerName: fmt.Sprintf("fillp%d", i)}
			if err := netlink.LinkAdd(v); err != nil {
				if i == 1022 {
					return nil
				}
				return fmt.Errorf("port %d: %w", i+2, err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	before := f.snapshot()
	out := f.exec(harness.Call{Command: "ADD", ContainerID: "cid-e7", Netns: pod.Path(), IfName: "eth0", Stdin: f.conf("1.1.0")})
	if out.RC == 0 || out.Err.Code != 102 || !strings.Contains(out.Err.Msg, "no free port") {
		t.Fatalf("ADD on a full bridge: rc %d %s", out.RC, out.Stdout)
	}
	f.expectClean(before)
}
