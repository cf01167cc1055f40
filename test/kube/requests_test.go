package kube_test

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/tapbridge/tapbridge-cni/internal/allocation"
	"github.com/tapbridge/tapbridge-cni/test/kube"
)

// The resources the IPAM asks about.
var ipamResources = []string{"ipallocations", "ipamclaims", "pods", "nodes"}

// opCost is what the API server counted for a group of calls, per call.
type opCost struct {
	n     int
	count map[string]float64 // "VERB resource" → requests per call
	bytes float64            // response bytes per call
}

func (c opCost) total() float64 { return kube.Total(c.count) }

func (c opCost) String() string {
	var keys []string
	for k := range c.count {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.2f", k, c.count[k]))
	}
	return fmt.Sprintf("%.2f requests (%s), %.0f bytes answered", c.total(), strings.Join(parts, ", "), c.bytes)
}

// measure runs calls and returns the API server's count per call.
func measure(t *testing.T, calls int, run func()) opCost {
	t.Helper()
	before, err := cluster.Requests()
	if err != nil {
		t.Fatal(err)
	}
	run()
	after, err := cluster.Requests()
	if err != nil {
		t.Fatal(err)
	}
	d := after.Sub(before, ipamResources...)
	c := opCost{n: calls, count: map[string]float64{}, bytes: kube.Total(d.Bytes) / float64(calls)}
	for k, v := range d.Count {
		c.count[k] = v / float64(calls)
	}
	return c
}

// costs is one round: plain ADDs, their DELs, and a claim's two ADDs
// (the first makes the address, the second, a migration target, joins).
type costs struct{ add, del, claimFirst, claimJoin opCost }

func (n *node) round(t *testing.T, nw *network, tag string) costs {
	const k = 10
	atts := make([]attachment, k)
	for i := range atts {
		atts[i] = attachment{cid: fmt.Sprintf("%s-%d", tag, i), ifname: "net1", pod: makePod(t, fmt.Sprintf("req-%s-%d", tag, i), "")}
	}
	got := make([][]netip.Addr, k)
	var c costs
	c.add = measure(t, k, func() {
		for i, a := range atts {
			got[i] = n.add(t, nw, a)
		}
	})
	c.del = measure(t, k, func() {
		for i, a := range atts {
			n.mustSucceed(t, nw, "DEL", a, withPrevResult(nw, n, got[i]))
		}
	})
	name := "vm-" + tag + ".flat"
	makeClaim(t, name, nw.name, "")
	ann := claimNetworks(nw, "pod0"+tag, name)
	src := attachment{cid: tag + "-src", ifname: "pod0" + tag, pod: makePod(t, "virt-launcher-"+tag+"-src", ann)}
	dst := attachment{cid: tag + "-dst", ifname: "pod0" + tag, pod: makePod(t, "virt-launcher-"+tag+"-dst", ann)}
	c.claimFirst = measure(t, 1, func() { n.add(t, nw, src) })
	c.claimJoin = measure(t, 1, func() { n.add(t, nw, dst) })
	for _, a := range []attachment{src, dst} {
		n.mustSucceed(t, nw, "DEL", a, nil)
		deletePod(t, a.pod)
	}
	deleteClaim(t, name)
	for _, a := range atts {
		deletePod(t, a.pod)
	}
	return c
}

// TestRequestsPerAdd: the API requests an ADD, a DEL and a claim's ADDs
// cost, read from the API server's own counters, are the same with 500
// allocations in the network as with none, and so are the bytes it
// answers: no call lists the network. (In a /16, 500 allocations make a
// tried address taken one time in 131; the creates and reads of
// allocations are allowed two more over the plain ADDs, and two more on
// the claim's first ADD, whose candidates the claim's random UID seeds.)
func TestRequestsPerAdd(t *testing.T) {
	nw := newNet(t, `[[{"subnet":"10.104.0.0/16"}]]`)
	n := newNode(t, "node-a")
	empty := n.round(t, nw, "e")
	fill(t, nw, 500)
	full := n.round(t, nw, "f")
	for _, c := range []struct {
		what        string
		empty, full opCost
	}{{"ADD", empty.add, full.add}, {"DEL (prevResult)", empty.del, full.del},
		{"claim's first ADD", empty.claimFirst, full.claimFirst}, {"claim's joining ADD", empty.claimJoin, full.claimJoin}} {
		t.Logf("%s, empty network: %s", c.what, c.empty)
		t.Logf("%s, 500 allocations: %s", c.what, c.full)
		for k, v := range c.full.count {
			// A taken candidate costs a create and a read (take.go:
			// a claim's always, a plain attachment's on its first
			// ADD); a claim's joining ADD reads its address by name.
			slack := 0.0
			if (strings.HasPrefix(k, "POST ") || strings.HasPrefix(k, "GET ipallocations")) &&
				(c.what == "ADD" || c.what == "claim's first ADD") {
				slack = 2.0 / float64(c.full.n)
			}
			if v > c.empty.count[k]+slack+1e-9 {
				t.Errorf("%s: %s %.2f per call with 500 allocations, %.2f with none", c.what, k, v, c.empty.count[k])
			}
		}
		// No call lists the network: a plain ADD lists only its own
		// allocations (heldBy), a claim's reads them by name.
		lists := 0.0
		if c.what == "ADD" {
			lists = 1
		}
		if got := c.full.count["LIST ipallocations"]; got > lists {
			t.Errorf("%s: %.2f lists of IPAllocations per call, want at most %.0f", c.what, got, lists)
		}
		if c.full.bytes > 2*c.empty.bytes+2000 {
			t.Errorf("%s: %.0f bytes answered per call with 500 allocations, %.0f with none", c.what, c.full.bytes, c.empty.bytes)
		}
	}
}

// fill creates n allocations of other attachments in the network, by the
// admin, the first n addresses of its range.
func fill(t *testing.T, nw *network, n int) {
	t.Helper()
	cfg := cluster.AdminConfig()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	store := allocation.Store{Dynamic: dyn}
	t.Cleanup(func() {
		err := dyn.Resource(allocGVR).DeleteCollection(ctxT(t), metav1.DeleteOptions{},
			metav1.ListOptions{LabelSelector: allocation.NetworkLabel + "=" + allocation.Key(nw.name)})
		if err != nil {
			t.Error(err)
		}
	})
	first := netip.MustParseAddr("10.104.0.1")
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				addr := first
				for range i {
					addr = addr.Next()
				}
				_, err := store.Create(ctxT(t), &allocation.Allocation{Spec: allocation.Spec{Network: nw.name, Address: addr.String(),
					Users: []allocation.User{{ContainerID: fmt.Sprintf("fill-%d", i), IfName: "net1", Node: "node-z"}}}})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
