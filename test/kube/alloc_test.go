package kube_test

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestConcurrentNodes: three nodes, 16 ADDs in flight at any time, 1000
// addresses in the range and 1000 ADDs: every address handed out once,
// one IPAllocation per address; the next ADD finds the range full; then
// 1000 concurrent DELs leave nothing.
func TestConcurrentNodes(t *testing.T) {
	const total, k = 1000, 16
	// 10.100.0.10 .. 10.100.3.241 is 1000 addresses.
	nw := newNet(t, `[[{"subnet":"10.100.0.0/22","rangeStart":"10.100.0.10","rangeEnd":"10.100.3.241","gateway":"10.100.0.1"}]]`)
	nw.timeout = "30s" // 16 execs on 2 shared cores, with the API server on them too
	nodes := []*node{newNode(t, "node-a"), newNode(t, "node-b"), newNode(t, "node-c")}
	atts := make([]attachment, total)
	for i := range atts {
		atts[i] = attachment{cid: fmt.Sprintf("c%04d", i), ifname: "net1"}
	}
	got := make([][]netip.Addr, total)
	errs := make([]string, total)
	start := time.Now()
	// The API requests of filling the range to the last address: the
	// candidates fail more often as it fills, and the last ADDs list.
	adds := measure(t, total, func() {
		parallel(total, k, func(i int) {
			out := nodes[i%len(nodes)].call(nw, "ADD", atts[i], nil)
			if out.RC != 0 {
				errs[i] = fmt.Sprintf("rc %d %s", out.RC, out.Stdout)
				return
			}
			got[i] = resultAddrs(t, out.Stdout)
		})
	})
	addTime := time.Since(start)
	t.Logf("filling the range, per ADD: %s", adds)
	seen := map[netip.Addr]int{}
	for i := range got {
		if errs[i] != "" {
			t.Errorf("ADD %d: %s", i, errs[i])
		}
		for _, a := range got[i] {
			seen[a]++
		}
	}
	dups := 0
	for a, n := range seen {
		if n > 1 {
			dups += n - 1
			t.Errorf("%s handed out %d times", a, n)
		}
	}
	objs := allocations(t, nw)
	t.Logf("%d ADDs on %d nodes at K=%d in %s (%.0f/s): %d distinct addresses, %d duplicates, %d IPAllocations",
		total, len(nodes), k, addTime.Round(time.Millisecond), float64(total)/addTime.Seconds(), len(seen), dups, len(objs))
	if len(seen) != total || len(objs) != total {
		t.Fatalf("want %d addresses and objects, got %d and %d", total, len(seen), len(objs))
	}
	nodes[0].mustFail(t, nw, "ADD", attachment{cid: "one-too-many", ifname: "net1"}, 110)

	start = time.Now()
	// DEL as libcni sends it, with the cached ADD result: one GET per
	// address instead of a list.
	parallel(total, k, func(i int) {
		n := nodes[(i+1)%len(nodes)]
		if out := n.call(nw, "DEL", atts[i], withPrevResult(nw, n, got[i])); out.RC != 0 {
			errs[i] = fmt.Sprintf("DEL rc %d %s", out.RC, out.Stdout)
		}
	})
	t.Logf("%d DELs at K=%d in %s", total, k, time.Since(start).Round(time.Millisecond))
	for i := range errs {
		if errs[i] != "" {
			t.Errorf("%d: %s", i, errs[i])
		}
	}
	if left := allocations(t, nw); len(left) != 0 {
		t.Errorf("%d IPAllocations left after every DEL", len(left))
	}
}

// parallel runs fn(0..n-1) with at most k at a time.
func parallel(n, k int, fn func(i int)) {
	sem := make(chan struct{}, k)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(i)
		}()
	}
	wg.Wait()
}

// TestDualStackAndRepeat: one address per range set (IPv4 and IPv6, the
// v4 set of two ranges), with gateway excluded; a repeated ADD of the
// same attachment returns the same addresses; CHECK passes; DEL frees.
func TestDualStackAndRepeat(t *testing.T) {
	nw := newNet(t, `[[{"subnet":"10.101.0.0/24","rangeStart":"10.101.0.1","rangeEnd":"10.101.0.1","gateway":"10.101.0.1"},{"subnet":"10.101.1.0/24","rangeStart":"10.101.1.5","rangeEnd":"10.101.1.6","exclude":["10.101.1.5"]}],[{"subnet":"2001:db8:101::/64","rangeStart":"2001:db8:101::10","rangeEnd":"2001:db8:101::10"}]]`)
	n := newNode(t, "node-a")
	a := attachment{cid: "dual", ifname: "net1"}
	got := n.add(t, nw, a)
	want := []netip.Addr{netip.MustParseAddr("10.101.1.6"), netip.MustParseAddr("2001:db8:101::10")}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ADD gave %v, want %v (gateway and exclude skipped)", got, want)
	}
	if again := n.add(t, nw, a); fmt.Sprint(again) != fmt.Sprint(want) {
		t.Fatalf("repeated ADD gave %v, want the same %v", again, want)
	}
	n.mustSucceed(t, nw, "CHECK", a, withPrevResult(nw, n, got))
	n.mustFail(t, nw, "ADD", attachment{cid: "other", ifname: "net1"}, 110)
	n.mustSucceed(t, nw, "DEL", a, nil)
	if left := allocations(t, nw); len(left) != 0 {
		t.Fatalf("left after DEL: %v", left)
	}
	n.mustFail(t, nw, "CHECK", a, 103)
	n.mustSucceed(t, nw, "DEL", a, nil) // a second DEL is fine
}

// withPrevResult is the network's config with a prevResult holding
// addrs, as libcni sends it with CHECK and DEL.
func withPrevResult(nw *network, n *node, addrs []netip.Addr) []byte {
	ips := ""
	for i, a := range addrs {
		if i > 0 {
			ips += ","
		}
		bits := 24
		if a.Is6() {
			bits = 64
		}
		ips += fmt.Sprintf(`{"address":"%s/%d"}`, a, bits)
	}
	conf := nw.conf(n)
	return append(conf[:len(conf)-1], fmt.Appendf(nil, `,"prevResult":{"cniVersion":"1.1.0","ips":[%s]}}`, ips)...)
}
