package e2e

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/e2e/cluster"
	"github.com/tapbridge/tapbridge-cni/test/kube"
)

// The migration tests keep the migrating guest's address with an
// IPAMClaim on tapbridge-ipam, on a real kube-apiserver, as KubeVirt
// with the kubevirt-ipam-controller does: the claim <vm>.<network>, and
// virt-launcher pods naming it in their network-selection element.

// vmNamespace holds the VMs' pods and claims.
const vmNamespace = "default"

// startAPI starts the cluster's API server (stopped with the cluster).
// Call it before reading baselines: it joins each node to the API's
// netns, which adds a link to the node.
func startAPI(ctx context.Context, t *testing.T, c *cluster.Cluster) *cluster.API {
	t.Helper()
	start := time.Now()
	api, err := c.StartAPI(ctx, vmNamespace)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver %s and etcd up, project manifests applied, nodes joined, in %v", kube.Version, time.Since(start).Round(time.Millisecond))
	return api
}

// claimedVM is a VM with an IPAMClaim on a persistent network.
type claimedVM struct {
	api                *cluster.API
	vm, network, claim string
	mac                net.HardwareAddr
}

// newClaimedVM creates the VM's claim for network.
func newClaimedVM(ctx context.Context, t *testing.T, api *cluster.API, vm, network string, mac net.HardwareAddr) *claimedVM {
	t.Helper()
	v := &claimedVM{api: api, vm: vm, network: network, claim: kube.ClaimName(vm, network), mac: mac}
	if err := api.CreateClaim(ctx, vmNamespace, v.claim, network, cluster.IfNameFor(network)); err != nil {
		t.Fatal(err)
	}
	return v
}

// add creates a virt-launcher pod of the VM and ADDs it on n under name;
// the pod must get the pinned MAC.
func (v *claimedVM) add(ctx context.Context, t *testing.T, n *cluster.Node, name string) *cluster.Pod {
	t.Helper()
	p, err := v.api.AddLauncher(ctx, n, cluster.Launcher{VM: v.vm, Name: name, Network: v.network, Claim: v.claim, Options: cluster.PodOptions{MAC: v.mac}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ADD %s (pod %s, IPAMClaim %s): tap %s, mac %s", p, p.Object().Name, v.claim, p.Tap, p.MAC)
	if p.MAC.String() != v.mac.String() {
		t.Fatalf("%s got MAC %s, want the pinned %s", p.Name, p.MAC, v.mac)
	}
	return p
}

// remove DELs the pod, removes its netns and deletes its pod object.
func (v *claimedVM) remove(ctx context.Context, t *testing.T, p *cluster.Pod) {
	t.Helper()
	if err := p.Del(ctx); err != nil {
		t.Fatalf("DEL %s: %v", p, err)
	}
	if err := p.Remove(); err != nil {
		t.Error(err)
	}
	if err := v.api.RemoveLauncher(ctx, p); err != nil {
		t.Error(err)
	}
}

// expectHeld checks that the claim holds exactly addrs (its status.ips,
// one IPAllocation each, owned by the claim) and that users are the
// allocations' users (by container ID, none for no pods).
func (v *claimedVM) expectHeld(ctx context.Context, t *testing.T, addrs []string, users ...*cluster.Pod) {
	t.Helper()
	allocs, err := v.api.Allocations(ctx, v.network)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range allocs {
		got = append(got, a.Address)
		if a.Claim != v.claim {
			t.Errorf("IPAllocation %s of %s: claim %q, want %s", a.Name, a.Address, a.Claim, v.claim)
		}
		var want []string
		for _, p := range users {
			want = append(want, p.ContainerID)
		}
		slices.Sort(want)
		slices.Sort(a.Users)
		if !slices.Equal(a.Users, want) {
			t.Errorf("IPAllocation %s of %s: users %v, want %v", a.Name, a.Address, a.Users, want)
		}
	}
	slices.Sort(got)
	want := slices.Clone(addrs)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("IPAllocations of %s hold %v, want %v", v.network, got, want)
	}
	ips, err := v.api.ClaimIPs(ctx, vmNamespace, v.claim)
	if err != nil {
		t.Fatal(err)
	}
	var bare []string
	for _, ip := range ips {
		a, _, _ := strings.Cut(ip, "/")
		bare = append(bare, a)
	}
	slices.Sort(bare)
	if !slices.Equal(bare, want) {
		t.Errorf("IPAMClaim %s: status.ips %v, want %v", v.claim, ips, want)
	}
	t.Logf("IPAMClaim %s holds %v (status.ips %v) with %d users", v.claim, got, ips, len(users))
}

// expectFreedWithClaim: with no pod of the VM left, the runtime's GC on
// every node keeps the claim's addresses; once the claim is deleted (as
// with its VM), the next GC frees them.
func (v *claimedVM) expectFreedWithClaim(ctx context.Context, t *testing.T, c *cluster.Cluster, addrs []string) {
	t.Helper()
	gc := func() {
		for _, n := range c.Nodes {
			if err := n.GC(ctx, v.network, nil); err != nil {
				t.Fatalf("GC %s on %s: %v", v.network, n.Name, err)
			}
		}
	}
	// GC leaves allocations younger than the IPAM's call timeout alone
	// (an ADD may still be making them): let them age past it, so what
	// keeps them below is the claim.
	allocs, err := v.api.Allocations(ctx, v.network)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range allocs {
		if wait := time.Until(a.Created.Add(cluster.IPAMTimeout + time.Second)); wait > 0 {
			time.Sleep(wait)
		}
	}
	gc()
	v.expectHeld(ctx, t, addrs)
	if err := v.api.DeleteClaim(ctx, vmNamespace, v.claim); err != nil {
		t.Fatal(err)
	}
	gc()
	left, err := v.api.Allocations(ctx, v.network)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("IPAMClaim %s deleted, GC run, and %d IPAllocations of %s are left: %v", v.claim, len(left), v.network, left)
	}
	t.Logf("GC kept %v while IPAMClaim %s existed and freed them once it was deleted", addrs, v.claim)
}
