package e2e

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/e2e/cluster"
	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
)

// TestDHCPMigration live-migrates a guest of a served network (its MAC
// and addresses pinned, one-minute leases) from node1 to node2. After the
// switch-over node2's agent answers the migrated guest's renewals (IPv4
// and IPv6) with the same addresses, node1's agent answers it nothing
// more, and once the source attachment is deleted node1's agent stops
// serving it; the guest keeps both addresses throughout.
func TestDHCPMigration(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), dhcpTimeout)
	defer cancel()
	c := newCluster(t)
	node1, node2 := c.Node("node1"), c.Node("node2")
	baseline := baselines(t, c)
	key := variant(t, c, "vmnet3-dhcp-pinned", cluster.Pin, cluster.Serve("1m"))
	opts := cluster.PodOptions{
		MAC: net.HardwareAddr{0x02, 0xa5, 0x00, 0x00, 0x15, 0x02},
		IPs: []netip.Prefix{netip.MustParsePrefix("172.16.3.232/24"), netip.MustParsePrefix("fd00:3::232/64")},
	}
	src, err := node1.AddPodWith(ctx, key, "vm-mig", opts)
	if err != nil {
		t.Fatal(err)
	}
	guests := []cluster.Guest{dhcpGuest(src)}
	srcVM := bootGuests(ctx, t, c, guests)[0]
	expectServed(t, srcVM)

	target, err := node2.AddPodWith(ctx, key, "vm-mig-target", opts)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := c.BootIncoming(ctx, image, guests[0], target) // the same command line as booted
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("serial console of the target:\n%s", dst.Output())
		}
	})
	mig, err := guest.Migrate(ctx, srcVM.VM, dst.VM)
	if err != nil {
		t.Fatal(err)
	}
	from1, from2 := node1.AgentLogEnd(), node2.AgentLogEnd()
	t.Logf("migrated %s to node2: total %v, QEMU's downtime %v", src.Name, mig.Total, mig.Downtime)
	if err := srcVM.Quit(ctx); err != nil {
		t.Fatal(err)
	}

	// The target's console holds what the guest printed since it runs there.
	for _, fam := range []int{4, 6} {
		t.Logf("after the switch-over: %s", waitRenewal(ctx, t, dst, fam, 0))
	}
	expectAgentReplied(t, node2, from2, target)
	expectNoReplies(t, node1, from1, src)

	delAt := node1.AgentLogEnd()
	if err := src.Del(ctx); err != nil {
		t.Fatalf("DEL %s: %v", src, err)
	}
	if err := src.Remove(); err != nil {
		t.Error(err)
	}
	stopped, err := node1.WaitAgentLog(ctx, delAt, func(l cluster.AgentLogLine) bool {
		return l.Msg == "stopped serving" && l.Attachment == src.Key()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node1's agent stopped serving the source attachment %s at %s", src.Key(), stopped.Time.Format(time.StampMilli))
	if m, err := node1.Metrics(); err != nil {
		t.Error(err)
	} else if v := m.Get("tapbridge_agent_attachments_served"); v != 0 {
		t.Errorf("node1's agent serves %v attachments after the source's DEL", v)
	}

	// One more renewal of each family on node2, the source gone.
	skip := len(renewalsOf(dst))
	from2 = node2.AgentLogEnd()
	for _, fam := range []int{4, 6} {
		t.Logf("after the source's DEL: %s", waitRenewal(ctx, t, dst, fam, skip))
	}
	expectAgentReplied(t, node2, from2, target)
	expectNoReplies(t, node1, from1, src)
	// Both nodes name the network's DHCPv6 server alike: the migrated
	// guest's Renews, which name the server of its lease, are answered.
	if m, err := node2.Metrics(); err != nil {
		t.Error(err)
	} else {
		refused := m.Get(`tapbridge_agent_refusals_total{protocol="dhcp6",reason="not-for-us"}`)
		t.Logf("node2's agent: DHCPv6 refused as for another server %v; DHCPv6 replies %v, DHCPv4 ACKs %v", refused,
			m.Get(`tapbridge_agent_replies_total{protocol="dhcp6",type="reply"}`), m.Get(`tapbridge_agent_replies_total{protocol="dhcp4",type="ack"}`))
		if refused != 0 {
			t.Errorf("node2's agent refused %v DHCPv6 messages as for another server: the migrated guest's Renews", refused)
		}
	}
	reach(ctx, t, node2, target)
	reach6(ctx, t, node2, target)
	expectNoLoss(t, dst)
	tearDown(ctx, t, c, baseline, dst)
}

// renewalsOf are the answered renewals the guest printed so far.
func renewalsOf(vm *cluster.VM) []guest.Lease {
	var out []guest.Lease
	for _, l := range vm.Leases() {
		if l.Renewal() {
			out = append(out, l)
		}
	}
	return out
}

// expectNoReplies: the node's agent sent the pod's attachment nothing
// from offset on.
func expectNoReplies(t *testing.T, n *cluster.Node, offset int64, p *cluster.Pod) {
	t.Helper()
	lines, err := n.AgentLog(offset)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		if l.Msg == "reply sent" && l.Attachment == p.Key() {
			t.Errorf("%s's agent answered %s after the switch-over: %s %s at %s", n.Name, p.Name, l.Protocol, l.Type, l.Time.Format(time.StampMilli))
		}
	}
}
