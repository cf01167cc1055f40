package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/e2e/cluster"
	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
)

// TestMultiQueue proves the multi-queue contract: with tap.multiQueue the
// TAP takes the 2 queues QEMU attaches (the guest sees 2 queue pairs and
// is reachable across the switch), and a consumer that asks for a
// single-queue TAP is refused with EINVAL, which is why the config and the
// VM's networkInterfaceMultiqueue must agree.
func TestMultiQueue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c := newCluster(t)
	node1, node2 := c.Node("node1"), c.Node("node2")
	mq := multiQueueVariant(t, node1, "vmnet13")
	p := addPod(ctx, t, node1, mq, "vm-mq")
	peer := addPod(ctx, t, node2, "vmnet13", "vm-peer") // gives node2 its vmnet13 address
	vms := bootGuests(ctx, t, c, []cluster.Guest{{Pod: p, Queues: 2}})

	ready, err := vms[0].WaitFor(ctx, "TBREADY")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ready, "queues=2") {
		t.Errorf("guest does not use 2 queues: %s", ready)
	}
	out, err := exec.Command("ip", "-n", p.NS.Name, "-d", "link", "show", p.Tap).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show %s: %v\n%s", p.Tap, err, out)
	}
	if !regexp.MustCompile(`multi_queue numqueues 2\b`).Match(out) {
		t.Errorf("%s does not have 2 queues attached:\n%s", p.Tap, out)
	}
	files, err := guest.OpenTap(p.NS.Path(), p.Tap, 1, guest.DefaultUID, guest.DefaultUID)
	for _, f := range files {
		f.Close()
	}
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("single-queue open of the multi-queue TAP: got %v, want EINVAL", err)
	}
	reach(ctx, t, node1, p)
	reach(ctx, t, node2, p)
	if err := p.Check(ctx); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	for _, pod := range []*cluster.Pod{p, peer} {
		if err := pod.Del(ctx); err != nil {
			t.Errorf("DEL %s: %v", pod, err)
		}
	}
	for _, n := range c.Nodes {
		if addrs, _ := n.HostAddrs(); len(addrs) != 0 {
			t.Errorf("%s keeps host addresses after the last DEL: %v", n.Name, addrs)
		}
	}
}

// multiQueueVariant registers on node a copy of its network with
// tap.multiQueue set, under "<network>-mq"; the network name (and so the
// IPAM pool) stays the same.
func multiQueueVariant(t *testing.T, node *cluster.Node, network string) string {
	t.Helper()
	b, err := os.ReadFile(node.ConflistPath(network))
	if err != nil {
		t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	for _, p := range list["plugins"].([]any) {
		if plugin := p.(map[string]any); plugin["type"] == cluster.PluginType {
			plugin["tap"].(map[string]any)["multiQueue"] = true
		}
	}
	b, _ = json.Marshal(list)
	key := fmt.Sprintf("%s-mq", network)
	if _, err := node.SetNetwork(key, b); err != nil {
		t.Fatal(err)
	}
	return key
}
