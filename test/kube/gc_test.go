package kube_test

import (
	"testing"
	"time"
)

// TestGCSweepNodeGone: pods force-deleted while their node may still run
// them keep their addresses; once the node's Node object is gone too,
// another node's GC frees them. A node whose own name is not a Node
// (nodeName not the Node's name) sweeps nothing.
func TestGCSweepNodeGone(t *testing.T) {
	nw := newNet(t, `[[{"subnet":"10.106.0.0/24","rangeStart":"10.106.0.10","rangeEnd":"10.106.0.200"}]]`)
	nw.timeout = "2s" // GC leaves allocations younger than this alone
	live := newNode(t, "sweep-live")
	dead := *live // another node name, same netns: only names matter here
	dead.name = "sweep-dead"
	self := *live
	self.name = "sweep-self"
	stranger := *live
	stranger.name = "sweep-not-a-node"
	makeNode(t, live.name)
	makeNode(t, self.name)

	onLive := attachment{cid: "on-live", ifname: "net1", pod: makePod(t, "sweep-on-live", "")}
	onDead := attachment{cid: "on-dead", ifname: "net1", pod: makePod(t, "sweep-on-dead", "")}
	liveAddr := live.add(t, nw, onLive)[0].String()
	deadAddr := dead.add(t, nw, onDead)[0].String()
	deletePod(t, onLive.pod) // force-deleted: the VM may still run on sweep-live
	deletePod(t, onDead.pod)
	time.Sleep(2100 * time.Millisecond)

	stranger.mustSucceed(t, nw, "GC", attachment{}, gcStdin(nw, &stranger))
	if left := allocations(t, nw); len(left) != 2 {
		t.Fatalf("GC on a node that is not a Node swept: %d allocations left, want 2", len(left))
	}
	self.mustSucceed(t, nw, "GC", attachment{}, gcStdin(nw, &self))
	left := allocations(t, nw)
	if _, ok := left[liveAddr]; !ok {
		t.Fatalf("GC freed %s of a pod force-deleted on a node that still exists", liveAddr)
	}
	if _, ok := left[deadAddr]; ok || len(left) != 1 {
		t.Fatalf("GC kept %s of a pod whose node is gone (left %d)", deadAddr, len(left))
	}
	deleteNode(t, live.name)
	self.mustSucceed(t, nw, "GC", attachment{}, gcStdin(nw, &self))
	if left := allocations(t, nw); len(left) != 0 {
		t.Fatalf("its node deleted, %s is still allocated", liveAddr)
	}
}
