package e2e

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/e2e/cluster"
	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
)

// TestDHCPMigration live-migrates a guest of a served network (its MAC
// pinned, its IPv4 and IPv6 addresses its IPAMClaim's on tapbridge-ipam,
// one-minute leases) from node1 to node2. The target pod gets the
// source's addresses. After the switch-over node2's agent answers the
// migrated guest's renewals (IPv4 and IPv6) with the same addresses,
// node1's agent answers it nothing more, and once the source attachment
// is deleted node1's agent stops serving it; the guest keeps both
// addresses throughout, and the claim keeps them until it is deleted.
func TestDHCPMigration(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), dhcpTimeout)
	defer cancel()
	c := newCluster(t)
	node1, node2 := c.Node("node1"), c.Node("node2")
	api := startAPI(ctx, t, c)
	baseline := baselines(t, c)
	key := variant(t, c, "vmnet3-dhcp-persistent", cluster.Persistent("["+persistent3v4+","+persistent3v6+"]"), cluster.Serve("1m"))
	vm := newClaimedVM(ctx, t, api, "vm-mig", key, net.HardwareAddr{0x02, 0xa5, 0x00, 0x00, 0x15, 0x02})
	src := vm.add(ctx, t, node1, "vm-mig")
	if !src.IP.IsValid() || !src.IP6.IsValid() {
		t.Fatalf("%s: want an IPv4 and an IPv6 address from the claim", src)
	}
	addrs := []string{src.IP.Addr().String(), src.IP6.Addr().String()}
	guests := []cluster.Guest{dhcpGuest(src)}
	srcVM := bootGuests(ctx, t, c, guests)[0]
	expectServed(t, srcVM)

	target := vm.add(ctx, t, node2, "vm-mig-target")
	if target.IP != src.IP || target.IP6 != src.IP6 {
		t.Fatalf("the migration target got %s and %s, the source has %s and %s", target.IP, target.IP6, src.IP, src.IP6)
	}
	vm.expectHeld(ctx, t, addrs, src, target)
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
	vm.remove(ctx, t, src)
	vm.expectHeld(ctx, t, addrs, target)
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
	if err := api.RemoveLauncher(ctx, target); err != nil {
		t.Error(err)
	}
	vm.expectHeld(ctx, t, addrs)
	vm.expectFreedWithClaim(ctx, t, c, addrs)
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
