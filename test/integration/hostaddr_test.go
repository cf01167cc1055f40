package integration

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/internal/hostaddr"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

func withHost(h map[string]any) func(map[string]any) {
	return func(c map[string]any) { c["hostAddress"] = h }
}

// The pool path: the node's first candidate is taken by a neighbour on the
// L2 (it answers ARP), so the plugin probes and takes the next one.
func TestHostAddrFromPool(t *testing.T) {
	f := newFixture(t)
	pool := []netip.Prefix{netip.MustParsePrefix("10.77.0.240/29")}
	cands := hostaddr.Candidates(hostaddr.Policy{Node: "node-a", Pool: pool}, netip.MustParsePrefix("10.77.0.0/24"))
	taken, want := cands[0], cands[1]
	f.peerAddr(taken.Addr().AsSlice())
	conf := f.conf("1.1.0", withHost(map[string]any{"nodeName": "node-a", "pool": []string{"10.77.0.240/29"}, "probeWait": "300ms"}))
	pod := f.pod()
	before := f.snapshot()
	r := f.runtime(conf)
	rt := rtConf("cid-pool", pod, "eth0")
	if _, err := r.add(rt); err != nil {
		t.Fatal(err)
	}
	f.expectBridgeAddr(want.String(), true)
	f.expectBridgeAddr(taken.String(), false)
	if err := r.del(rt); err != nil {
		t.Fatal(err)
	}
	f.expectClean(before)
}

// An address of the admin's in the subnet is used and never removed.
func TestHostAddrAdmins(t *testing.T) {
	f := newFixture(t)
	err := f.node.Host.Do(func() error {
		br, _ := netlink.LinkByName(harness.BridgeName)
		return netlink.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 77, 0, 1), Mask: net.CIDRMask(24, 32)}})
	})
	if err != nil {
		t.Fatal(err)
	}
	pod := f.pod()
	before := f.snapshot()
	r := f.runtime(f.conf("1.1.0"))
	rt := rtConf("cid-admin", pod, "eth0")
	if _, err := r.add(rt); err != nil {
		t.Fatal(err)
	}
	if got := f.bridgeAddrs(); len(got) != 1 || got[0] != "10.77.0.1/24" {
		t.Fatalf("bridge addresses %v: the admin's must be used, no other added", got)
	}
	if err := r.check(rt); err != nil {
		t.Fatal(err)
	}
	if err := r.del(rt); err != nil {
		t.Fatal(err)
	}
	f.expectClean(before) // the admin's address is still there
}

// No address available for the subnet: code 7 naming subnet and node,
// nothing left; with host addresses disabled, ADD works and adds none.
func TestHostAddrNone(t *testing.T) {
	f := newFixture(t)
	pod := f.pod()
	before := f.snapshot()
	conf := f.conf("1.1.0", withHost(map[string]any{"nodeName": "node-z"}))
	out := f.exec(harness.Call{Command: "ADD", ContainerID: "cid-none", Netns: pod.Path(), IfName: "eth0", Stdin: conf})
	if out.RC == 0 || out.Err.Code != 7 || !strings.Contains(out.Err.Msg, "10.77.0.0/24") || !strings.Contains(out.Err.Msg, "node-z") {
		t.Fatalf("ADD without a host address: rc %d %s", out.RC, out.Stdout)
	}
	f.expectClean(before)
	conf = f.conf("1.1.0", withHost(map[string]any{"disabled": true}))
	out = f.exec(harness.Call{Command: "ADD", ContainerID: "cid-none", Netns: pod.Path(), IfName: "eth0", Stdin: conf})
	if out.RC != 0 || len(f.bridgeAddrs()) != 0 {
		t.Fatalf("ADD with host addresses disabled: rc %d %s, bridge %v", out.RC, out.Stdout, f.bridgeAddrs())
	}
}

// L2 only: no IPAM, no IPs; the node's static addresses still go on.
func TestL2Only(t *testing.T) {
	f := newFixture(t)
	pod := f.pod()
	before := f.snapshot()
	r := f.runtime(f.conf("1.1.0", func(c map[string]any) { delete(c, "ipam") }))
	rt := rtConf("cid-l2", pod, "eth0")
	res, err := r.add(rt)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 0 {
		t.Fatalf("L2-only result has IPs: %v", res.IPs)
	}
	f.expectBridgeAddr("10.77.0.250/24", true)
	if err := r.check(rt); err != nil {
		t.Fatal(err)
	}
	if err := r.del(rt); err != nil {
		t.Fatal(err)
	}
	f.expectClean(before)
}

// Dual stack: IPv6 guest IPs are reported, and the IPv6 host address
// (static: the admin's choice, not probed) goes on without DAD, usable as
// soon as ADD returns, and off with the last pod.
func TestDualStack(t *testing.T) {
	f := newFixture(t)
	pod := f.pod()
	before := f.snapshot()
	conf := f.conf("1.1.0", func(c map[string]any) {
		c["hostAddress"] = map[string]any{"nodeName": "node-a", "static": map[string]any{"node-a": []string{"10.77.0.250/24", "fd77::250/64"}}}
		c["ipam"].(map[string]any)["ranges"] = [][]map[string]any{
			{{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.10", "rangeEnd": "10.77.0.200"}},
			{{"subnet": "fd77::/64", "rangeStart": "fd77::10", "rangeEnd": "fd77::200"}},
		}
	})
	r := f.runtime(conf)
	rt := rtConf("cid-v6", pod, "eth0")
	res, err := r.add(rt)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 2 || res.IPs[1].Address.IP.To4() != nil {
		t.Fatalf("IPs: %v", res.IPs)
	}
	f.expectBridgeAddr("fd77::250/64", true)
	f.host(func() error {
		br, err := netlink.LinkByName(harness.BridgeName)
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(br, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if a.IP.String() == "fd77::250" && (a.Flags&unix.IFA_F_NODAD == 0 || a.Flags&unix.IFA_F_TENTATIVE != 0) {
				t.Errorf("static host address fd77::250 has flags %#x: want nodad, not tentative", a.Flags)
			}
		}
		return nil
	})
	if err := r.check(rt); err != nil {
		t.Fatal(err)
	}
	if err := r.del(rt); err != nil {
		t.Fatal(err)
	}
	f.expectClean(before)
}
