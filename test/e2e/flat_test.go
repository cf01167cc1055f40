package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/e2e/cluster"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// flat is the scenario of TestFlatL2: two nodes, two subnets on one L2,
// a VM on each (node, subnet), and a spare VM pod on node1 that GC makes
// stale.
type flat struct {
	c                  *cluster.Cluster
	node1, node2       *cluster.Node
	vm1, vm2, vm3, vm4 *cluster.Pod // vm1/vm2: vmnet3 on node1/node2; vm3/vm4: vmnet13
	stale              *cluster.Pod // vmnet3 on node1, left out of GC's valid list
	guests             map[*cluster.Pod]*cluster.VM
	baseline           map[string]harness.State
}

// TestFlatL2 runs VMs on two subnets across two nodes and checks, with
// real ICMP and TCP, that VMs, node host addresses and nodes all talk
// on-link over the flat L2; then CHECK, GC and DEL, down to a node that is
// back to what it was.
func TestFlatL2(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	f := &flat{c: newCluster(t), baseline: map[string]harness.State{}}
	f.node1, f.node2 = f.c.Node("node1"), f.c.Node("node2")
	for _, n := range f.c.Nodes {
		f.baseline[n.Name] = state(t, n)
		for net := range netSubnets {
			if err := n.Status(ctx, net); err != nil {
				t.Fatalf("STATUS %s on %s: %v", net, n.Name, err)
			}
		}
	}
	f.add(ctx, t)
	f.boot(ctx, t)
	steps := []struct {
		name string
		fn   func(context.Context, *testing.T)
	}{
		{"host addresses", f.hostAddresses},
		{"guest probes", f.guestProbes},
		{"nodes reach VMs on-link", f.nodesReachVMs},
		{"no routing anywhere", f.noRouting},
		{"CHECK keeps a running VM reachable", f.checkRunning},
		{"GC removes exactly the stale VM pod", f.gc},
		{"host address goes with the last pod", f.delAll},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.fn(ctx, t) }) {
			t.FailNow() // later steps build on this one
		}
	}
}

func (f *flat) add(ctx context.Context, t *testing.T) {
	t.Helper()
	for _, n := range f.c.Nodes {
		if addrs, _ := n.HostAddrs(); len(addrs) > 0 {
			t.Fatalf("%s has host addresses before any pod: %v", n.Name, addrs)
		}
	}
	f.vm1 = addPod(ctx, t, f.node1, "vmnet3", "vm1")
	f.vm2 = addPod(ctx, t, f.node2, "vmnet3", "vm2")
	f.vm3 = addPod(ctx, t, f.node1, "vmnet13", "vm3")
	f.vm4 = addPod(ctx, t, f.node2, "vmnet13", "vm4")
	f.stale = addPod(ctx, t, f.node1, "vmnet3", "vm5")
}

// boot starts a guest on every pod. Each of vm1..vm4 probes the other VM
// of its subnet and both nodes' host addresses on it, with ping and TCP,
// and stays up as a responder; vm5 only responds.
func (f *flat) boot(ctx context.Context, t *testing.T) {
	t.Helper()
	probe := func(p, peer *cluster.Pod) cluster.Guest {
		subnet := p.IP.Masked()
		targets := []netip.Addr{peer.IP.Addr(), hostAddr(t, f.node1, subnet).Addr(), hostAddr(t, f.node2, subnet).Addr()}
		return cluster.Guest{Pod: p, Ping: targets, TCP: targets}
	}
	guests := []cluster.Guest{
		probe(f.vm1, f.vm2), probe(f.vm2, f.vm1),
		probe(f.vm3, f.vm4), probe(f.vm4, f.vm3),
		{Pod: f.stale},
	}
	f.guests = map[*cluster.Pod]*cluster.VM{}
	for _, vm := range bootGuests(ctx, t, f.c, guests) {
		f.guests[vm.Pod] = vm
	}
}

// hostAddresses: node1 and node2 own their static address on vmnet3, and
// distinct addresses from the pool on vmnet13, probed over the same L2.
func (f *flat) hostAddresses(_ context.Context, t *testing.T) {
	for _, n := range f.c.Nodes {
		if got := hostAddr(t, n, subnet3); got != static3[n.Name] {
			t.Errorf("%s on vmnet3: %s, want the static %s", n.Name, got, static3[n.Name])
		}
		if got := hostAddr(t, n, subnet13); !pool13.Contains(got.Addr()) || got.Bits() != subnet13.Bits() {
			t.Errorf("%s on vmnet13: %s, want an address of the pool %s with the subnet's length", n.Name, got, pool13)
		}
		addrs, _ := n.HostAddrs()
		t.Logf("%s host addresses: %v", n.Name, addrs)
	}
	if a, b := hostAddr(t, f.node1, subnet13), hostAddr(t, f.node2, subnet13); a == b {
		t.Errorf("both nodes took %s from the pool", a)
	}
}

// guestProbes: VM<->VM on the same subnet across nodes, VM -> its node's
// host address and VM -> the other node's, ICMP and TCP.
func (f *flat) guestProbes(ctx context.Context, t *testing.T) {
	pairs := [][2]*cluster.Pod{{f.vm1, f.vm2}, {f.vm2, f.vm1}, {f.vm3, f.vm4}, {f.vm4, f.vm3}}
	for _, pair := range pairs {
		p, peer := pair[0], pair[1]
		var want []string
		for _, dst := range []netip.Addr{peer.IP.Addr(), hostAddr(t, f.node1, p.IP.Masked()).Addr(), hostAddr(t, f.node2, p.IP.Masked()).Addr()} {
			want = append(want, "ping "+dst.String(), fmt.Sprintf("tcp %s:%d", dst, cluster.EchoPort))
		}
		expectProbes(ctx, t, f.guests[p], want...)
	}
}

// nodesReachVMs: every node reaches every VM, local and remote, on both
// subnets, from its host address on the VM's subnet.
func (f *flat) nodesReachVMs(ctx context.Context, t *testing.T) {
	for _, n := range f.c.Nodes {
		for _, p := range []*cluster.Pod{f.vm1, f.vm2, f.vm3, f.vm4, f.stale} {
			reach(ctx, t, n, p)
		}
	}
}

// noRouting: each node's only IPv4 routes are the connected routes of its
// host addresses on br-ext, and no namespace forwards. So everything
// above went on-link over the L2.
func (f *flat) noRouting(_ context.Context, t *testing.T) {
	for _, n := range f.c.Nodes {
		s := state(t, n)
		var want []string
		for _, a := range s.Host.Addrs[cluster.HostBridge] {
			want = append(want, fmt.Sprintf("%s via <nil> dev %s scope link", a.Masked(), cluster.HostBridge))
		}
		sort.Strings(want)
		if got := strings.Join(s.Host.Routes, "\n"); got != strings.Join(want, "\n") {
			t.Errorf("%s routes:\n%s\nwant only the connected ones:\n%s", n.Name, got, strings.Join(want, "\n"))
		}
	}
	all := []harness.Netns{f.c.Switch}
	for _, n := range f.c.Nodes {
		all = append(all, n.NS)
	}
	for _, p := range []*cluster.Pod{f.vm1, f.vm2, f.vm3, f.vm4} {
		all = append(all, p.NS)
	}
	for _, ns := range all {
		var fwd []byte
		if err := ns.Do(func() error {
			var err error
			fwd, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(fwd)) != "0" {
			t.Errorf("ip_forward is %q in %s", fwd, ns.Name)
		}
	}
	// The pod netns holds no address: the IP belongs to the guest.
	if err := f.vm1.NS.Do(func() error {
		addrs, err := netlink.AddrList(nil, unix.AF_INET)
		for _, a := range addrs {
			if !a.IP.IsLoopback() {
				t.Errorf("pod netns of vm1 has address %s", a.IPNet)
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// checkRunning: CHECK passes while the guest runs, and leaves it reachable.
func (f *flat) checkRunning(ctx context.Context, t *testing.T) {
	for _, p := range []*cluster.Pod{f.vm1, f.vm2, f.vm3, f.vm4} {
		if err := p.Check(ctx); err != nil {
			t.Errorf("CHECK %s: %v", p, err)
		}
	}
	reach(ctx, t, f.node1, f.vm2)
	reach(ctx, t, f.node2, f.vm1)
	reach(ctx, t, f.node1, f.vm4)
}
