package kube_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

const claimRanges = `[[{"subnet":"10.102.0.0/24","rangeStart":"10.102.0.10","rangeEnd":"10.102.0.200"}]]`

// TestClaimRecreatedPod: a VM's pod re-created (another name, another
// container) with the same IPAMClaim gets the same address; the claim's
// status.ips says so; DEL keeps the address while the claim exists.
func TestClaimRecreatedPod(t *testing.T) {
	nw := newNet(t, claimRanges)
	n := newNode(t, "node-a")
	makeClaim(t, "vm1.flat", nw.name, "pod1a2b3c")
	ann := claimNetworks(nw, "pod1a2b3c", "vm1.flat")
	first := attachment{cid: "launcher-1", ifname: "pod1a2b3c", pod: makePod(t, "virt-launcher-vm1-aaaaa", ann)}
	addr := n.add(t, nw, first)
	if ips := claimIPs(t, "vm1.flat"); len(ips) != 1 || ips[0] != addr[0].String()+"/24" {
		t.Fatalf("claim status.ips %v, want [%s/24]", ips, addr[0])
	}
	n.mustSucceed(t, nw, "DEL", first, nil)
	deletePod(t, first.pod)
	if len(allocations(t, nw)) != 1 {
		t.Fatal("the claim's address went with its pod")
	}
	second := attachment{cid: "launcher-2", ifname: "pod1a2b3c", pod: makePod(t, "virt-launcher-vm1-bbbbb", ann)}
	if again := n.add(t, nw, second); again[0] != addr[0] {
		t.Fatalf("re-created pod got %s, want the claim's %s", again[0], addr[0])
	}
	// A pod without the claim never gets it.
	other := attachment{cid: "plain", ifname: "net1", pod: makePod(t, "plain-pod", "")}
	if got := n.add(t, nw, other); got[0] == addr[0] {
		t.Fatalf("a pod without the claim got the claim's address %s", addr[0])
	}
	n.mustSucceed(t, nw, "DEL", other, nil)
	n.mustSucceed(t, nw, "DEL", second, nil)
	deleteClaim(t, "vm1.flat")
	waitForGC(t, n, nw)
	if left := allocations(t, nw); len(left) != 0 {
		t.Fatalf("left after the claim is gone and GC: %d", len(left))
	}
}

// TestClaimMigration: source and target pods on two nodes share one
// claim: both get the same address while both run, it survives both
// DELs, and goes only when the claim is deleted.
func TestClaimMigration(t *testing.T) {
	nw := newNet(t, claimRanges)
	src, dst := newNode(t, "node-a"), newNode(t, "node-b")
	makeClaim(t, "vm2.flat", nw.name, "podfeed01")
	ann := claimNetworks(nw, "podfeed01", "vm2.flat")
	source := attachment{cid: "src", ifname: "podfeed01", pod: makePod(t, "virt-launcher-vm2-source", ann)}
	target := attachment{cid: "dst", ifname: "podfeed01", pod: makePod(t, "virt-launcher-vm2-target", ann)}
	a := src.add(t, nw, source)
	b := dst.add(t, nw, target)
	if a[0] != b[0] {
		t.Fatalf("migration target got %s, source has %s", b[0], a[0])
	}
	objs := allocations(t, nw)
	if len(objs) != 1 || len(users(objs[a[0].String()])) != 2 {
		t.Fatalf("want one allocation with two users, got %v", objs)
	}
	src.mustSucceed(t, nw, "DEL", source, nil)
	deletePod(t, source.pod)
	dst.mustSucceed(t, nw, "DEL", target, nil)
	if len(allocations(t, nw)) != 1 {
		t.Fatal("the claim's address went before the claim")
	}
	waitForGC(t, dst, nw)
	if len(allocations(t, nw)) != 1 {
		t.Fatal("GC freed the address of a claim that still exists")
	}
	deleteClaim(t, "vm2.flat")
	waitForGC(t, dst, nw)
	if left := allocations(t, nw); len(left) != 0 {
		t.Fatalf("the claim is gone and its address is still allocated: %v", left)
	}
}

// TestClaimDeletedWhilePodRuns: the address stays with the running pod
// (GC does not take it), and goes with the pod's DEL.
func TestClaimDeletedWhilePodRuns(t *testing.T) {
	nw := newNet(t, claimRanges)
	n := newNode(t, "node-a")
	makeClaim(t, "vm3.flat", nw.name, "pod0vm3")
	a := attachment{cid: "vm3", ifname: "pod0vm3", pod: makePod(t, "virt-launcher-vm3", claimNetworks(nw, "pod0vm3", "vm3.flat"))}
	n.add(t, nw, a)
	deleteClaim(t, "vm3.flat")
	waitForGC(t, n, nw, a)
	if len(allocations(t, nw)) != 1 {
		t.Fatal("GC took the address of a running pod whose claim was deleted")
	}
	n.mustSucceed(t, nw, "CHECK", a, nil)
	n.mustSucceed(t, nw, "DEL", a, nil)
	if left := allocations(t, nw); len(left) != 0 {
		t.Fatalf("left after the pod's DEL: %v", left)
	}
}

// TestClaimRace: six pods of one VM (one claim, a fresh one) ADD at once
// on three nodes: the claim decides, every pod gets the same addresses,
// and the claim holds one allocation per range set.
func TestClaimRace(t *testing.T) {
	nw := newNet(t, dualRanges)
	nodes := []*node{newNode(t, "node-a"), newNode(t, "node-b"), newNode(t, "node-c")}
	makeClaim(t, "vm5.flat", nw.name, "pod0vm5")
	ann := claimNetworks(nw, "pod0vm5", "vm5.flat")
	const k = 6
	atts := make([]attachment, k)
	for i := range atts {
		atts[i] = attachment{cid: fmt.Sprintf("vm5-%d", i), ifname: "pod0vm5", pod: makePod(t, fmt.Sprintf("virt-launcher-vm5-%d", i), ann)}
	}
	got := make([]string, k)
	parallel(k, k, func(i int) {
		out := nodes[i%len(nodes)].call(nw, "ADD", atts[i], nil)
		got[i] = fmt.Sprintf("rc %d %s", out.RC, out.Stdout)
		if out.RC == 0 {
			got[i] = fmt.Sprint(resultAddrs(t, out.Stdout))
		}
	})
	for i := range got {
		if got[i] != got[0] {
			t.Fatalf("pods of one claim got %q and %q", got[0], got[i])
		}
	}
	objs := allocations(t, nw)
	if len(objs) != 2 {
		for addr, o := range objs {
			t.Logf("%s: users %v created %s", addr, users(o), o.GetCreationTimestamp())
		}
		t.Fatalf("the claim holds %d allocations, want 2 (one per set); status.ips %v", len(objs), claimIPs(t, "vm5.flat"))
	}
	for _, o := range objs {
		if len(users(o)) != k {
			t.Fatalf("%s has users %v, want all %d pods", o.GetName(), users(o), k)
		}
	}
	t.Logf("%d concurrent ADDs of one claim: all got %s; status.ips %v", k, got[0], claimIPs(t, "vm5.flat"))
	for i, a := range atts {
		nodes[i%len(nodes)].mustSucceed(t, nw, "DEL", a, nil)
	}
	deleteClaim(t, "vm5.flat")
	waitForGC(t, nodes[0], nw)
	if left := allocations(t, nw); len(left) != 0 {
		t.Fatalf("left: %v", left)
	}
}

// TestClaimErrors: a claim of another network or another interface, a
// missing claim and a malformed annotation each fail with their own code
// and allocate nothing.
func TestClaimErrors(t *testing.T) {
	nw := newNet(t, claimRanges)
	n := newNode(t, "node-a")
	makeClaim(t, "vm4.other", "some-other-network", "pod0vm4")
	makeClaim(t, "vm4.iface", nw.name, "pod0other")
	cases := []struct {
		name, ann string
		code      uint
		says      string
	}{
		{"other-network", claimNetworks(nw, "pod0vm4", "vm4.other"), 111, `vms/vm4.other: spec.network is "some-other-network", want "` + nw.name + `"`},
		{"other-interface", claimNetworks(nw, "pod0vm4", "vm4.iface"), 111, `vms/vm4.iface: spec.interface is "pod0other", want "pod0vm4"`},
		{"missing-claim", claimNetworks(nw, "pod0vm4", "no-such-claim"), 114, "no-such-claim"},
		{"malformed-json", `[{"name":`, 112, "k8s.v1.cni.cncf.io/networks"},
		{"both-ips-and-claim", fmt.Sprintf(`[{"name":%q,"ips":["10.102.0.5"],"ipam-claim-reference":"x"}]`, nw.name), 112, "ipam-claim-reference"},
	}
	for _, c := range cases {
		a := attachment{cid: c.name, ifname: "pod0vm4", pod: makePod(t, "pod-"+c.name, c.ann)}
		if msg := n.mustFail(t, nw, "ADD", a, c.code); !strings.Contains(msg, c.says) {
			t.Errorf("%s: message %q does not name %q", c.name, msg, c.says)
		}
	}
	if left := allocations(t, nw); len(left) != 0 {
		t.Fatalf("failed ADDs left %d allocations", len(left))
	}
}

// waitForGC waits out the GC grace (the call timeout: an ADD may be in
// flight for that long) and runs GC on n with the given valid list.
func waitForGC(t *testing.T, n *node, nw *network, valid ...attachment) {
	t.Helper()
	d, _ := time.ParseDuration(nw.timeout)
	time.Sleep(d + 100*time.Millisecond)
	n.mustSucceed(t, nw, "GC", attachment{}, gcStdin(nw, n, valid...))
}
