package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/e2e/cluster"
	"github.com/tapbridge/tapbridge-cni/test/kube"
)

// The persistent network: the shipped NAD of mode 3 (tapbridge-ipam,
// allowPersistentIPs), run as is but for the sandbox's kubeconfig and
// node names (and "dhcp" on). Its VMs are made as KubeVirt with the
// kubevirt-ipam-controller makes them: an IPAMClaim <vm>.<network> per
// VM network, and virt-launcher pods whose network-selection element
// names it in ipam-claim-reference.
const (
	persistentNADFile = "nad-tapbridge-ipam.yaml"
	persistentNet     = "vmnet13-persistent"
	vmNamespace       = "default" // the NAD's, the claims' and the pods'
)

// vmClaim is a VM's IPAMClaim and the address each of its pods got.
type vmClaim struct {
	vm, name string
	addr     netip.Prefix // the claim's address, from the first ADD
	seen     []string     // one entry per pod that got it
}

func (d *demo) startAPI(ctx context.Context) error {
	start := time.Now()
	d.say("starting kube-apiserver %s and etcd in %s-api; applying the IPAMClaim and IPAllocation CRDs and conf/k8s", kube.Version, d.c.ID)
	api, err := d.c.StartAPI(ctx, vmNamespace)
	if err != nil {
		return err
	}
	d.api = api
	d.say("API server ready after %.1fs at %s; node1 and node2 reach it from their netns; tapbridge-ipam uses the token of kube-system/tapbridge-cni (conf/k8s/ipam-rbac.yaml)",
		time.Since(start).Seconds(), kube.Server())
	return nil
}

func (d *demo) claim(vm string) *vmClaim {
	for i := range d.claims {
		if d.claims[i].vm == vm {
			return &d.claims[i]
		}
	}
	return nil
}

// addVM adds a pod of vm on the persistent network as a VM's pod comes
// to be under KubeVirt: the claim first (for a new VM), then a
// virt-launcher pod naming it, ADDed on node. Every pod of the VM must
// get the claim's address, and the claim's status.ips must say so.
func (d *demo) addVM(ctx context.Context, node, name, vm string, o cluster.PodOptions) (*cluster.Pod, error) {
	c := d.claim(vm)
	if c == nil {
		name := kube.ClaimName(vm, persistentNet)
		if err := d.api.CreateClaim(ctx, vmNamespace, name, persistentNet, cluster.IfNameFor(persistentNet)); err != nil {
			return nil, err
		}
		d.claims = append(d.claims, vmClaim{vm: vm, name: name})
		c = &d.claims[len(d.claims)-1]
		d.say("IPAMClaim %s/%s (spec.network %s, spec.interface %s), as the kubevirt-ipam-controller makes it", vmNamespace, name, persistentNet, cluster.IfNameFor(persistentNet))
	}
	l := cluster.Launcher{VM: vm, Name: name, Network: persistentNet, Claim: c.name, Options: o}
	p, err := d.api.AddLauncher(ctx, d.c.Node(node), l)
	if err != nil {
		return nil, err
	}
	d.pods = append(d.pods, p)
	if !c.addr.IsValid() {
		c.addr = p.IP
	}
	if p.IP != c.addr {
		return nil, fmt.Errorf("%s (pod %s) got %s, its claim %s holds %s", name, p.Object().Name, p.IP, c.name, c.addr)
	}
	ips, err := d.api.ClaimIPs(ctx, vmNamespace, c.name)
	if err != nil {
		return nil, err
	}
	if len(ips) != 1 || ips[0] != c.addr.String() {
		return nil, fmt.Errorf("claim %s: status.ips %v, want [%s]", c.name, ips, c.addr)
	}
	c.seen = append(c.seen, fmt.Sprintf("%s on %s", p.Object().Name, node))
	return p, nil
}

// allocationOf is the IPAllocation of the claim's address.
func (d *demo) allocationOf(ctx context.Context, c *vmClaim) (kube.Allocation, error) {
	allocs, err := d.api.Allocations(ctx, persistentNet)
	if err != nil {
		return kube.Allocation{}, err
	}
	for _, a := range allocs {
		if a.Address == c.addr.Addr().String() {
			return a, nil
		}
	}
	return kube.Allocation{}, fmt.Errorf("no IPAllocation of %s holds %s", c.name, c.addr)
}

// recreate re-creates vm's pod as a VM restart or a node drain does: the
// guest stops, the runtime DELs the sandbox, the pod object goes (its
// claim keeps the address, with no user), then a new virt-launcher pod
// with a new sandbox is ADDed on the same node and gets the claim's
// address again. The new guest is booted by the caller.
func (d *demo) recreate(ctx context.Context, old *cluster.Pod) (*cluster.Pod, error) {
	vm := old.Name
	c := d.claim(vm)
	d.say("re-creating %s's pod (a VM restart): stop the guest, DEL sandbox %s, delete pod %s", vm, old.NS.Name, old.Object().Name)
	if err := d.delPod(ctx, old); err != nil {
		return nil, err
	}
	d.forget(old)
	delete(d.vms, old)
	a, err := d.allocationOf(ctx, c)
	if err != nil {
		return nil, err
	}
	if len(a.Users) != 0 || a.Claim != c.name {
		return nil, fmt.Errorf("after the DEL of %s's only pod its address %s has users %v and claim %q, want none and %s", vm, c.addr, a.Users, a.Claim, c.name)
	}
	d.say("  pod gone; IPAllocation %s (%s) stays, owned by IPAMClaim %s with no user", a.Name, a.Address, a.Claim)
	p, err := d.addVM(ctx, old.Node.Name, vm, vm, cluster.PodOptions{})
	if err != nil {
		return nil, err
	}
	d.say("  ADD of the new pod %s (sandbox %s, container %.12s…) on %s: tapbridge-ipam gave %s, the claim's address ✓",
		p.Object().Name, p.NS.Name, p.ContainerID, p.Node.Name, p.IP)
	return p, nil
}

// releaseClaims shows where the claims' addresses go once every pod is
// gone: they stay (GC too keeps them) until the claims are deleted, as
// with their VMs, and the next GC frees them.
func (d *demo) releaseClaims(ctx context.Context) error {
	allocs, err := d.api.Allocations(ctx, persistentNet)
	if err != nil {
		return err
	}
	if err := d.gcPersistent(ctx); err != nil {
		return err
	}
	kept, err := d.api.Allocations(ctx, persistentNet)
	if err != nil {
		return err
	}
	d.printClaims(allocs)
	if len(kept) != len(d.claims) || len(allocs) != len(d.claims) {
		return fmt.Errorf("with every pod gone, %d IPAllocations before GC and %d after, want one per claim (%d)", len(allocs), len(kept), len(d.claims))
	}
	for _, c := range d.claims {
		if err := d.api.DeleteClaim(ctx, vmNamespace, c.name); err != nil {
			return err
		}
	}
	if err := d.gcPersistent(ctx); err != nil {
		return err
	}
	left, err := d.api.Allocations(ctx, persistentNet)
	if err != nil {
		return err
	}
	if len(left) != 0 {
		return fmt.Errorf("the claims are deleted and %d IPAllocations of %s are left: %v", len(left), persistentNet, left)
	}
	d.say("deleted the %d IPAMClaims (as with their VMs); GC on each node freed their addresses: no IPAllocation of %s is left", len(d.claims), persistentNet)
	return nil
}

// gcPersistent runs the runtime's GC of the persistent network on each
// node, no pod of it being left there: tapbridge-cni forwards it to
// tapbridge-ipam, which frees what nobody owns any more.
func (d *demo) gcPersistent(ctx context.Context) error {
	for _, n := range d.c.Nodes {
		if err := n.GC(ctx, persistentNet, nil); err != nil {
			return fmt.Errorf("GC %s on %s: %w", persistentNet, n.Name, err)
		}
	}
	return nil
}

// printClaims prints each claim's address and the pods that got it.
func (d *demo) printClaims(allocs []kube.Allocation) {
	fmt.Printf("\nAddresses kept by IPAMClaims (%s, tapbridge-ipam), once every pod is deleted:\n", persistentNet)
	for _, c := range d.claims {
		users := "?"
		for _, a := range allocs {
			if a.Address == c.addr.Addr().String() {
				users = fmt.Sprint(len(a.Users))
			}
		}
		fmt.Printf("  %-4s IPAMClaim %-26s %-16s users now %s; got it: %s ✓\n", c.vm, c.name, c.addr, users, strings.Join(c.seen, ", "))
	}
	d.say("the runtime's GC on both nodes keeps them: each is its claim's")
}
