package kube_test

import (
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const staticRanges = `[[{"subnet":"10.105.0.0/24","rangeStart":"10.105.0.10","rangeEnd":"10.105.0.200","gateway":"10.105.0.1"}],[{"subnet":"2001:db8:105::/64"}]]`

// TestStaticRequests: an address asked for by runtimeConfig.ips,
// args.cni.ips or CNI_ARGS IP= is allocated exactly (the other set's
// chosen by the IPAM), or the ADD fails with a code and a message naming
// the address and why, allocating nothing.
func TestStaticRequests(t *testing.T) {
	nw := newNet(t, staticRanges)
	n := newNode(t, "node-a")
	runtimeIPs := func(ips ...string) []byte {
		return withKeys(nw, n, fmt.Sprintf(`"runtimeConfig":{"ips":["%s"]}`, strings.Join(ips, `","`)))
	}
	a := attachment{cid: "static-a", ifname: "net1", pod: makePod(t, "static-a", "")}
	out := n.call(nw, "ADD", a, runtimeIPs("10.105.0.50/24", "2001:db8:105::50"))
	if out.RC != 0 {
		t.Fatalf("ADD with runtimeConfig.ips: rc %d %s", out.RC, out.Stdout)
	}
	if got := fmt.Sprint(resultAddrs(t, out.Stdout)); got != "[10.105.0.50 2001:db8:105::50]" {
		t.Fatalf("runtimeConfig.ips gave %s", got)
	}
	// A repeated ADD with the same request gets the same; with another
	// it is refused, naming both.
	if out := n.call(nw, "ADD", a, runtimeIPs("10.105.0.50")); out.RC != 0 || !strings.Contains(string(out.Stdout), "10.105.0.50/24") {
		t.Fatalf("repeated ADD: rc %d %s", out.RC, out.Stdout)
	}
	mustFailWith(t, n, nw, a, runtimeIPs("10.105.0.51"), 117, "10.105.0.51", "10.105.0.50", "earlier ADD")

	// CNI_ARGS IP= and args.cni.ips.
	b := attachment{cid: "static-b", ifname: "net1", ip: "10.105.0.60"}
	if got := n.add(t, nw, b); got[0].String() != "10.105.0.60" {
		t.Fatalf("CNI_ARGS IP= gave %v", got)
	}
	c := attachment{cid: "static-c", ifname: "net1"}
	out = n.call(nw, "ADD", c, withKeys(nw, n, `"args":{"cni":{"ips":["10.105.0.61"]}}`))
	if out.RC != 0 || resultAddrs(t, out.Stdout)[0].String() != "10.105.0.61" {
		t.Fatalf("args.cni.ips: rc %d %s", out.RC, out.Stdout)
	}

	before := len(allocations(t, nw))
	d := attachment{cid: "static-d", ifname: "net1", pod: makePod(t, "static-d", "")}
	mustFailWith(t, n, nw, d, runtimeIPs("10.105.0.50"), 117, "10.105.0.50", "static-a", "pod vms/static-a")
	mustFailWith(t, n, nw, d, runtimeIPs("10.9.9.9"), 116, "10.9.9.9", "runtimeConfig.ips[0]", "no range set")
	mustFailWith(t, n, nw, d, runtimeIPs("10.105.0.1"), 116, "10.105.0.1", "gateway")
	mustFailWith(t, n, nw, d, runtimeIPs("10.105.0.70", "10.105.0.71"), 116, "10.105.0.70", "10.105.0.71", "range set 0")
	e := d
	e.ip = "10.105.0.72"
	mustFailWith(t, n, nw, e, runtimeIPs("10.105.0.73"), 116, "CNI_ARGS IP", "10.105.0.72", "10.105.0.73")
	// The runtime's DEL after a refused ADD has the same stdin and
	// CNI_ARGS: it must succeed (a failed DEL is retried forever).
	n.mustSucceed(t, nw, "DEL", d, runtimeIPs("10.9.9.9"))
	n.mustSucceed(t, nw, "DEL", e, runtimeIPs("10.105.0.73"))
	bad := d
	bad.ip = "nope"
	mustFailWith(t, n, nw, bad, nil, 4, "CNI_ARGS IP", "nope")
	n.mustSucceed(t, nw, "DEL", bad, nil)
	// CHECK reads the requests it can: a's is held, another is not.
	n.mustSucceed(t, nw, "CHECK", a, withKeys(nw, n, `"runtimeConfig":{"ips":["10.105.0.50"]},"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.105.0.50/24"}]}`))
	if out := n.call(nw, "CHECK", a, withKeys(nw, n, `"runtimeConfig":{"ips":["10.105.0.52"]},"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.105.0.50/24"}]}`)); out.RC == 0 || out.Err == nil || !strings.Contains(out.Err.Msg, "10.105.0.52") {
		t.Fatalf("CHECK with a request not held: rc %d %s", out.RC, out.Stdout)
	}
	// The second set's request taken: the first set's new address is undone.
	mustFailWith(t, n, nw, d, runtimeIPs("2001:db8:105::50"), 117, "2001:db8:105::50", "static-a")
	if after := len(allocations(t, nw)); after != before {
		t.Fatalf("failed ADDs left %d allocations (before them %d)", after, before)
	}
	for _, at := range []attachment{a, b, c, d} {
		n.mustSucceed(t, nw, "DEL", at, nil)
	}
	if left := allocations(t, nw); len(left) != 0 {
		t.Fatalf("left: %d", len(left))
	}
}

// TestStaticClaim: with an IPAMClaim (spec.interface empty, as the
// kubevirt-ipam-controller writes it), a request must agree with the
// claim's address; a claim without one takes the requested address.
func TestStaticClaim(t *testing.T) {
	nw := newNet(t, staticRanges)
	n := newNode(t, "node-a")
	makeClaim(t, "vm17.flat", nw.name, "")
	ann := claimNetworks(nw, "pod0vm17", "vm17.flat")
	first := attachment{cid: "vm17-1", ifname: "pod0vm17", pod: makePod(t, "virt-launcher-vm17-1", ann), ip: "10.105.0.77"}
	got := n.add(t, nw, first)
	if got[0].String() != "10.105.0.77" {
		t.Fatalf("claim without an address, requested 10.105.0.77: got %v", got)
	}
	if ips := claimIPs(t, "vm17.flat"); len(ips) != 2 || ips[0] != "10.105.0.77/24" {
		t.Fatalf("claim status.ips %v", ips)
	}
	second := attachment{cid: "vm17-2", ifname: "pod0vm17", pod: makePod(t, "virt-launcher-vm17-2", ann), ip: "10.105.0.78"}
	mustFailWith(t, n, nw, second, nil, 117, "10.105.0.78", "10.105.0.77", "vms/vm17.flat")
	second.ip = "10.105.0.77"
	if again := n.add(t, nw, second); fmt.Sprint(again) != fmt.Sprint(got) {
		t.Fatalf("the claim's address requested: %v, want %v", again, got)
	}
	// Another claim, or a plain attachment, cannot have it.
	makeClaim(t, "vm8.flat", nw.name, "")
	third := attachment{cid: "vm8", ifname: "pod0vm8", pod: makePod(t, "virt-launcher-vm8", claimNetworks(nw, "pod0vm8", "vm8.flat")), ip: "10.105.0.77"}
	mustFailWith(t, n, nw, third, nil, 117, "10.105.0.77", "IPAMClaim vms/vm17.flat")
	if ips := claimIPs(t, "vm8.flat"); len(ips) != 0 {
		t.Fatalf("a refused ADD wrote status.ips %v", ips)
	}
	if objs := allocations(t, nw); len(objs) != 2 || len(users(objs["10.105.0.77"])) != 2 {
		t.Fatalf("want the claim's two allocations, both pods on the v4 one: %v", objs)
	}
	for _, a := range []attachment{first, second} {
		n.mustSucceed(t, nw, "DEL", a, nil)
	}
	deleteClaim(t, "vm17.flat")
	deleteClaim(t, "vm8.flat")
	waitForGC(t, n, nw)
	if left := allocations(t, nw); len(left) != 0 {
		t.Fatalf("left: %d", len(left))
	}
}

func mustFailWith(t *testing.T, n *node, nw *network, a attachment, stdin []byte, code uint, says ...string) {
	t.Helper()
	out := n.call(nw, "ADD", a, stdin)
	if out.RC == 0 || out.Err == nil || out.Err.Code != code {
		t.Fatalf("ADD %s: rc %d %s, want code %d", a.cid, out.RC, out.Stdout, code)
	}
	for _, s := range says {
		if !strings.Contains(out.Err.Msg, s) {
			t.Errorf("ADD %s: message %q does not name %q", a.cid, out.Err.Msg, s)
		}
	}
	t.Logf("ADD %s: code %d: %s", a.cid, code, out.Err.Msg)
}

// TestClaimAddressReadByName: a claim's address is found through its
// status.ips, by name. Its allocation deleted behind the IPAM's back is
// made again at the same address (the claim never gets a second one);
// taken meanwhile by another attachment, the ADD fails naming both.
func TestClaimAddressReadByName(t *testing.T) {
	nw := newNet(t, staticRanges)
	n := newNode(t, "node-a")
	makeClaim(t, "vm6.flat", nw.name, "")
	ann := claimNetworks(nw, "pod0vm6", "vm6.flat")
	first := attachment{cid: "vm6-1", ifname: "pod0vm6", pod: makePod(t, "virt-launcher-vm6-1", ann)}
	got := n.add(t, nw, first)
	_, dyn := clients(t)
	objs := allocations(t, nw)
	for _, o := range objs {
		if err := dyn.Resource(allocGVR).Delete(ctxT(t), o.GetName(), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	second := attachment{cid: "vm6-2", ifname: "pod0vm6", pod: makePod(t, "virt-launcher-vm6-2", ann)}
	if again := n.add(t, nw, second); fmt.Sprint(again) != fmt.Sprint(got) {
		t.Fatalf("allocations gone, the claim's pod got %v, want the claim's %v", again, got)
	}
	for _, o := range allocations(t, nw) {
		if err := dyn.Resource(allocGVR).Delete(ctxT(t), o.GetName(), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	thief := attachment{cid: "thief", ifname: "net1", ip: got[0].String()}
	n.add(t, nw, thief)
	third := attachment{cid: "vm6-3", ifname: "pod0vm6", pod: makePod(t, "virt-launcher-vm6-3", ann)}
	mustFailWith(t, n, nw, third, nil, 117, got[0].String(), "vms/vm6.flat", "thief")
	if ips := claimIPs(t, "vm6.flat"); len(ips) != 2 || ips[0] != got[0].String()+"/24" {
		t.Fatalf("status.ips changed to %v", ips)
	}
	n.mustSucceed(t, nw, "DEL", thief, nil)
	for _, a := range []attachment{first, second, third} {
		n.mustSucceed(t, nw, "DEL", a, nil)
	}
	deleteClaim(t, "vm6.flat")
	waitForGC(t, n, nw)
	if left := allocations(t, nw); len(left) != 0 {
		t.Fatalf("left: %d", len(left))
	}
}
