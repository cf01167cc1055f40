package e2e

import (
	"context"
	"slices"
	"testing"

	"github.com/tapbridge/tapbridge-cni/test/e2e/cluster"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// gc: the runtime has lost track of vm5 (no libcni cache, not in the valid
// list) while its guest still runs. GC of vmnet3 on node1 with vm1 as the
// only valid attachment tears vm5 down, and only vm5: its links, its IPAM
// lease and its data path go, while vm1 (same network) and vm3 (other
// network, same node) keep working and node1 keeps 172.16.3.150.
func (f *flat) gc(ctx context.Context, t *testing.T) {
	before := state(t, f.node1)
	if err := f.stale.ForgetCache(); err != nil {
		t.Fatal(err)
	}
	if err := f.node1.GC(ctx, "vmnet3", []*cluster.Pod{f.vm1}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if err := f.node1.GC(ctx, "vmnet13", []*cluster.Pod{f.vm3}); err != nil {
		t.Fatalf("GC of vmnet13: %v", err)
	}
	after := state(t, f.node1)
	if gone := missing(before.Host.Names(), after.Host.Names()); len(gone) != 1 || gone[0] != f.stale.HostIf {
		t.Errorf("GC removed links %v, want exactly the host veth %s of vm5", gone, f.stale.HostIf)
	}
	wantLease := "vmnet3/" + f.stale.IP.Addr().String()
	if gone := missing(before.IPAM.Files, after.IPAM.Files); len(gone) != 1 || gone[0] != wantLease {
		t.Errorf("GC released leases %v, want exactly %s", gone, wantLease)
	}
	if got := hostAddr(t, f.node1, subnet3); got != static3["node1"] {
		t.Errorf("node1 on vmnet3 after GC: %s", got)
	}
	if links := podLinks(t, f.stale); len(links) != 1 || links[0] != "lo" {
		t.Errorf("vm5's pod netns after GC holds %v, want only lo", links)
	}
	for _, p := range []*cluster.Pod{f.vm1, f.vm3} {
		if err := p.Check(ctx); err != nil {
			t.Errorf("CHECK %s after GC: %v", p, err)
		}
	}
	reach(ctx, t, f.node2, f.vm1)
	reach(ctx, t, f.node2, f.vm3)
	src := hostAddr(t, f.node1, subnet3).Addr()
	if _, err := f.node1.Ping(ctx, src, f.stale.IP.Addr()); err == nil {
		t.Errorf("vm5 still answers after GC tore its attachment down")
	}
	f.stopVM(t, f.stale)
	if err := f.stale.Remove(); err != nil {
		t.Error(err)
	}
}

// delAll: DEL of the last pod of a subnet on a node removes that node's
// host address on it, and only that one; once every pod is gone each node
// is back to its state before the first ADD. A second DEL is a no-op.
func (f *flat) delAll(ctx context.Context, t *testing.T) {
	f.del(ctx, t, f.vm3)
	expectNoHostAddr(t, f.node1, subnet13)
	hostAddr(t, f.node1, subnet3)
	hostAddr(t, f.node2, subnet13)
	reach(ctx, t, f.node2, f.vm4)
	f.del(ctx, t, f.vm1)
	if addrs, _ := f.node1.HostAddrs(); len(addrs) != 0 {
		t.Errorf("node1 host addresses after its last DEL: %v", addrs)
	}
	f.del(ctx, t, f.vm2)
	f.del(ctx, t, f.vm4)
	if err := f.vm1.Del(ctx); err != nil {
		t.Errorf("second DEL of vm1: %v", err)
	}
	for _, n := range f.c.Nodes {
		if d := f.baseline[n.Name].Diff(state(t, n)); d != "" {
			t.Errorf("%s is not back to what it was:\n%s", n.Name, d)
		}
	}
}

// del stops the pod's guest, runs DEL and removes the netns, as a
// runtime does when a VM pod ends.
func (f *flat) del(ctx context.Context, t *testing.T, p *cluster.Pod) {
	t.Helper()
	f.stopVM(t, p)
	if err := p.Del(ctx); err != nil {
		t.Errorf("DEL %s: %v", p, err)
	}
	if err := p.Remove(); err != nil {
		t.Error(err)
	}
}

func (f *flat) stopVM(t *testing.T, p *cluster.Pod) {
	t.Helper()
	if vm := f.guests[p]; vm != nil {
		if err := vm.Stop(); err != nil {
			t.Error(err)
		}
	}
}

func podLinks(t *testing.T, p *cluster.Pod) []string {
	t.Helper()
	var names []string
	err := p.NS.Do(func() error {
		var err error
		names, err = harness.LinkNames()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// missing lists the entries of a that b lacks.
func missing(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}
