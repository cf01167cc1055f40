package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/e2e/cluster"
	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// The migrating VM's identity: the MAC as KubeVirt's macAddress or
// KubeMacPool pins it (the "mac" capability), the address its IPAMClaim's
// on vmnet3-persistent, vmnet3 with tapbridge-ipam in a range outside
// both nodes' host-local ranges of vmnet3 (and vmnet3-dhcp's).
var (
	migMAC = net.HardwareAddr{0x02, 0xa5, 0x00, 0x00, 0x15, 0x01}
	peerIP = netip.MustParsePrefix("172.16.3.200/24")
)

const (
	persistent3   = "vmnet3-persistent"
	persistent3v4 = `[{"subnet":"172.16.3.0/24","rangeStart":"172.16.3.220","rangeEnd":"172.16.3.239"}]`
	persistent3v6 = `[{"subnet":"fd00:3::/64","rangeStart":"fd00:3::220","rangeEnd":"fd00:3::239"}]`
)

// TCG boots and a migration on a shared 2-core machine: generous bounds.
const (
	migrationTimeout = 12 * time.Minute
	awaitLimit       = 2 * time.Minute
)

// migration is the scenario of TestMigration.
type migration struct {
	c            *cluster.Cluster
	node1, node2 *cluster.Node
	peer         harness.Netns
	vm           *claimedVM   // the migrating VM's claim on persistent3
	ip           netip.Prefix // its address, the claim's
	g            cluster.Guest
	src, target  *cluster.Pod
	watch        *cluster.Pod // another VM, on node2, pinging the migrating one
	vms          map[*cluster.Pod]*cluster.VM
	baseline     map[string]harness.State

	pingers    []*cluster.Pinger
	stream     *cluster.Stream
	cap1, cap2 *cluster.Capture // what node1 and node2 send onto the switch
	addedAt    time.Time        // the target's ADD began
	switchedAt time.Time        // QEMU reported the migration completed
	quitAt     time.Time        // the source QEMU was gone
	watchAtSw  int              // replies the watching VM had got at the switch-over
	streamAtSw int
}

// TestMigration live-migrates a QEMU guest from node1 to node2 while a
// peer on the switch, both nodes and another VM ping it and a TCP
// connection to it stays open: the target attachment (same MAC, and the
// same address from the VM's IPAMClaim on tapbridge-ipam) is added
// beside the live source without disturbing either node and stays
// silent on the L2 until QEMU's announce, after which the switch
// forwards the MAC to node2; DEL of the source then leaves the target
// alone, its address with the claim, and node1 as it was; the address is
// freed only once the claim is deleted.
func TestMigration(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), migrationTimeout)
	defer cancel()
	m := &migration{c: newCluster(t), vms: map[*cluster.Pod]*cluster.VM{}, baseline: map[string]harness.State{}}
	m.node1, m.node2 = m.c.Node("node1"), m.c.Node("node2")
	api := startAPI(ctx, t, m.c)
	for _, n := range m.c.Nodes {
		m.baseline[n.Name] = state(t, n)
	}
	for _, n := range m.c.Nodes {
		if _, err := n.Variant("vmnet3", persistent3, cluster.Persistent("["+persistent3v4+"]")); err != nil {
			t.Fatal(err)
		}
	}
	m.vm = newClaimedVM(ctx, t, api, "vm-mig", persistent3, migMAC)
	steps := []struct {
		name string
		fn   func(context.Context, *testing.T)
	}{
		{"source VM up and watched", m.setUp},
		{"target ADD beside the live source", m.addTarget},
		{"live migration", m.migrate},
		{"the announce moves the MAC, nothing before it", m.announce},
		{"downtime", m.downtime},
		{"DEL of the source leaves the target", m.delSource},
		{"DEL of the rest", m.delRest},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.fn(ctx, t) }) {
			t.FailNow() // later steps build on this one
		}
	}
}

// setUp attaches the migrating VM on node1 (pinned MAC, its claim's
// address) and a watching VM on node2, boots both, and starts the
// watchers: pings from a peer on the switch, from each node's host
// address and from the watching VM, and a TCP stream from the peer.
func (m *migration) setUp(ctx context.Context, t *testing.T) {
	m.src = m.vm.add(ctx, t, m.node1, "vm-mig")
	m.ip = m.src.IP
	if !m.ip.IsValid() {
		t.Fatalf("%s got no IPv4 address", m.src)
	}
	m.vm.expectHeld(ctx, t, []string{m.ip.Addr().String()}, m.src)
	m.watch = addPod(ctx, t, m.node2, "vmnet3", "vm-watch")
	var err error
	if m.peer, err = m.c.AddPeer("peer", 1, peerIP); err != nil {
		t.Fatal(err)
	}
	guests := []cluster.Guest{{Pod: m.src}, {Pod: m.watch, Watch: m.ip.Addr()}}
	for _, vm := range bootGuests(ctx, t, m.c, guests) {
		m.vms[vm.Pod] = vm
	}
	m.g = guests[0] // as booted: the target needs the same command line
	m.startWatchers(t)
	m.await(ctx, t, "every watcher sees the guest", func() bool {
		n, _ := m.stream.Echoed()
		ok := n >= 3 && len(m.watchReplies()) >= 3
		for _, p := range m.pingers {
			ok = ok && len(p.Replies()) >= 3
		}
		return ok
	})
}

func (m *migration) startWatchers(t *testing.T) {
	t.Helper()
	from := []struct {
		ns   harness.Netns
		name string
		src  netip.Addr
	}{
		{m.peer, "peer " + peerIP.Addr().String(), peerIP.Addr()},
		{m.node1.NS, "node1 " + static3["node1"].Addr().String(), static3["node1"].Addr()},
		{m.node2.NS, "node2 " + static3["node2"].Addr().String(), static3["node2"].Addr()},
	}
	for _, f := range from {
		p, err := m.c.StartPinger(f.ns, f.name, f.src, m.ip.Addr())
		if err != nil {
			t.Fatal(err)
		}
		m.pingers = append(m.pingers, p)
	}
	var err error
	if m.stream, err = m.c.StartStream(m.peer, peerIP.Addr(), m.ip.Addr()); err != nil {
		t.Fatal(err)
	}
}

// watchReplies are the replies the watching VM's ping got so far.
func (m *migration) watchReplies() []cluster.Reply {
	return cluster.ParseReplies(m.vms[m.watch].Lines(), m.ip.Addr())
}

// addTarget adds the target attachment on node2 (a second virt-launcher
// pod naming the claim) while the source runs: it gets the source's MAC
// and address, the claim's allocation has both pods as users, node1 does
// not change at all, and node2 holds exactly its two attachments, its
// host address untouched.
func (m *migration) addTarget(ctx context.Context, t *testing.T) {
	m.expectFDB(ctx, t, "port-node1", "before the target's ADD")
	before1, before2 := m.nodeState(t, m.node1, m.src), m.nodeState(t, m.node2, m.watch)
	var err error
	if m.cap1, err = m.c.CapturePort("node1"); err != nil {
		t.Fatal(err)
	}
	if m.cap2, err = m.c.CapturePort("node2"); err != nil {
		t.Fatal(err)
	}
	m.addedAt = time.Now()
	m.target = m.vm.add(ctx, t, m.node2, "vm-mig-target")
	if m.target.IP != m.ip {
		t.Fatalf("the migration target got %s, the source has %s", m.target.IP, m.ip)
	}
	m.vm.expectHeld(ctx, t, []string{m.ip.Addr().String()}, m.src, m.target)
	if d := before1.Diff(m.nodeState(t, m.node1, m.src)); d != "" {
		t.Errorf("the target's ADD on node2 changed node1:\n%s", d)
	}
	after2 := m.nodeState(t, m.node2, m.watch, m.target)
	live := []harness.Attachment{
		m.watch.Attachment("vmnet3", static3["node2"].String(), false),
		m.target.Attachment(persistent3, static3["node2"].String(), true), // no host-local lease
	}
	if err := after2.Live(live); err != nil {
		t.Errorf("node2 after the target's ADD: %v", err)
	}
	if d := before2.Diff(after2.Without(m.target.NS.Name)); !onlyTargetChanges(d) {
		t.Errorf("the target's ADD changed more on node2 than its own pieces:\n%s", d)
	}
	for _, p := range []*cluster.Pod{m.src, m.target, m.watch} {
		if err := p.Check(ctx); err != nil {
			t.Errorf("CHECK %s: %v", p, err)
		}
	}
	m.expectFDB(ctx, t, "port-node1", "after the target's ADD")
}

func (m *migration) nodeState(t *testing.T, n *cluster.Node, pods ...*cluster.Pod) harness.State {
	t.Helper()
	s, err := n.StateWith(pods...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// onlyTargetChanges: the differences are new links, tc filters, nft
// tables and state files only (Live has checked they are the target's);
// no address or route went or came.
func onlyTargetChanges(diff string) bool {
	for _, l := range strings.Split(diff, "\n") {
		if strings.HasPrefix(l, "addrs ") || strings.HasPrefix(l, "routes") {
			return false
		}
	}
	return true
}

// migrate starts QEMU on the target's TAP waiting for the migration,
// migrates the guest over a unix socket and stops the source QEMU, as
// libvirt does once the migration completed.
func (m *migration) migrate(ctx context.Context, t *testing.T) {
	srcVM := m.vms[m.src]
	dst, err := m.c.BootIncoming(ctx, image, m.g, m.target)
	if err != nil {
		t.Fatal(err)
	}
	m.vms[m.target] = dst
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("serial console of the target:\n%s", dst.Output())
		}
	})
	// Traffic for the guest floods or passes node2 while the target QEMU
	// waits on its TAP: 2 s of it (20 pings of each watcher) before the
	// migration, so the silence checked by announce means something.
	from := time.Now()
	m.await(ctx, t, "2 s of traffic with the target QEMU waiting", func() bool {
		ok := true
		for _, p := range m.pingers {
			ok = ok && p.RepliesSince(from) >= 20
		}
		return ok
	})
	m.expectFDB(ctx, t, "port-node1", "with the target QEMU waiting")
	mig, err := guest.Migrate(ctx, srcVM.VM, dst.VM)
	m.switchedAt = time.Now()
	if err != nil {
		t.Fatal(err)
	}
	m.watchAtSw = len(m.watchReplies())
	m.streamAtSw, _ = m.stream.Echoed()
	t.Logf("migration completed: total %v, QEMU's downtime %v, setup %v, %d MiB of RAM in %d passes",
		mig.Total, mig.Downtime, mig.Setup, mig.RAMBytes>>20, mig.Passes)
	if st, err := srcVM.Status(ctx); err != nil || st != "postmigrate" {
		t.Errorf("source QEMU after the migration: %q (%v), want postmigrate", st, err)
	}
	if err := srcVM.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	m.quitAt = time.Now()
}

// announce: QEMU's RARP announce from the guest MAC reaches the switch
// from node2, and nothing with the guest MAC came from node2 before it
// (no MAC flap while the target waited); then the switch forwards the MAC
// to node2, and node1 sends nothing with it any more.
func (m *migration) announce(ctx context.Context, t *testing.T) {
	m.await(ctx, t, "a RARP announce from node2", func() bool { return len(rarps(m.cap2.From(migMAC))) > 0 })
	frames := m.cap2.From(migMAC)
	for _, f := range frames {
		if f.EtherType == cluster.EtherTypeRARP {
			break
		}
		t.Errorf("node2 sent a frame from the guest MAC before the announce: ethertype %#04x, %v after the target's ADD", f.EtherType, f.At.Sub(m.addedAt).Round(time.Millisecond))
	}
	first := rarps(frames)[0]
	t.Logf("first RARP announce from %s reached the switch %v before Migrate returned; nothing from that MAC came from node2 in the %v between the target's ADD and it",
		migMAC, m.switchedAt.Sub(first.At).Round(time.Millisecond), first.At.Sub(m.addedAt).Round(time.Millisecond))
	m.expectFDB(ctx, t, "port-node2", "after the announce")
	m.expectNeigh(t)
}

func rarps(frames []cluster.Frame) []cluster.Frame {
	var out []cluster.Frame
	for _, f := range frames {
		if f.EtherType == cluster.EtherTypeRARP {
			out = append(out, f)
		}
	}
	return out
}

// expectFDB waits (briefly: the frames that teach it have been seen) for
// the switch to forward the guest MAC to port, and fails if it does not.
func (m *migration) expectFDB(ctx context.Context, t *testing.T, port, when string) {
	t.Helper()
	var got string
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err = m.c.SwitchFDB(migMAC)
		if (err == nil && got == port) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling the FDB: the kernel has no event we could await here cheaply
	}
	switch {
	case err != nil:
		t.Errorf("switch fdb %s: %v", when, err)
	case got != port:
		t.Errorf("%s the switch forwards %s to %q, want %s", when, migMAC, got, port)
	default:
		t.Logf("%s the switch forwards %s to %s", when, migMAC, got)
	}
}

// expectNeigh: the peer's ARP entry for the guest's address still holds
// the guest MAC (the guest kept its MAC and address).
func (m *migration) expectNeigh(t *testing.T) {
	t.Helper()
	err := m.peer.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		neighs, err := netlink.NeighList(l.Attrs().Index, unix.AF_INET)
		if err != nil {
			return err
		}
		for _, n := range neighs {
			if n.IP.Equal(m.ip.Addr().AsSlice()) {
				if !bytes.Equal(n.HardwareAddr, migMAC) {
					return fmt.Errorf("the peer's neighbour entry for %s is %s, want %s", m.ip.Addr(), n.HardwareAddr, migMAC)
				}
				return nil
			}
		}
		return fmt.Errorf("the peer has no neighbour entry for %s", m.ip.Addr())
	})
	if err != nil {
		t.Error(err)
	}
}

// downtime waits until every watcher has seen the guest answer again for
// 2 s (20 pings) after the switch-over, stops them and reports the
// outage each saw.
func (m *migration) downtime(ctx context.Context, t *testing.T) {
	m.await(ctx, t, "every watcher gets 20 answers after the switch-over", func() bool {
		n, _ := m.stream.Echoed()
		ok := n >= m.streamAtSw+20 && len(m.watchReplies()) >= m.watchAtSw+20 && m.stream.Err() == nil
		for _, p := range m.pingers {
			ok = ok && p.RepliesSince(m.switchedAt) >= 20
		}
		return ok
	})
	var report []string
	for _, p := range m.pingers {
		report = append(report, fmt.Sprintf("  ping %-20s -> %s: %s", p.Name, m.ip.Addr(), p.Stop()))
	}
	report = append(report, fmt.Sprintf("  ping %-20s -> %s: %s", "vm-watch "+m.watch.IP.Addr().String(), m.ip.Addr(), cluster.OutageOf(m.watchReplies())))
	res := m.stream.Stop()
	report = append(report, fmt.Sprintf("  tcp  %-20s -> %s:%d: %s", "peer", m.ip.Addr(), cluster.EchoPort, res))
	frames := m.cap2.From(migMAC)
	garps := 0
	for _, f := range frames {
		if f.GratuitousARP(m.ip.Addr()) {
			garps++
		}
	}
	report = append(report, fmt.Sprintf("  from %s the switch got from node2: %d RARP announce frames (QEMU), %d gratuitous ARP (the guest, GUEST_ANNOUNCE), %d frames in all",
		migMAC, len(rarps(frames)), garps, len(frames)))
	t.Logf("downtime across the migration (pings every %v):\n%s", cluster.PingInterval, strings.Join(report, "\n"))
	if res.Err != nil {
		t.Errorf("the TCP connection to the guest broke: %v", res.Err)
	}
	if late := framesAfter(m.cap1.From(migMAC), m.switchedAt); late > 0 {
		t.Errorf("node1 sent %d frames from the guest MAC after the switch-over", late)
	}
	reach(ctx, t, m.node2, m.target)
}

func framesAfter(frames []cluster.Frame, t time.Time) int {
	n := 0
	for _, f := range frames {
		if f.At.After(t) {
			n++
		}
	}
	return n
}

// delSource: DEL of the source pod, after its QEMU is gone (and its pod
// object), leaves node2 exactly as it was, the address with the claim
// and the target, the guest reachable, and node1 as before any pod.
func (m *migration) delSource(ctx context.Context, t *testing.T) {
	before2 := m.nodeState(t, m.node2, m.watch, m.target)
	m.vm.remove(ctx, t, m.src)
	if d := before2.Diff(m.nodeState(t, m.node2, m.watch, m.target)); d != "" {
		t.Errorf("DEL of the source changed node2:\n%s", d)
	}
	m.vm.expectHeld(ctx, t, []string{m.ip.Addr().String()}, m.target)
	if err := m.target.Check(ctx); err != nil {
		t.Errorf("CHECK %s after the source's DEL: %v", m.target, err)
	}
	reach(ctx, t, m.node2, m.target)
	if d := m.baseline["node1"].Diff(state(t, m.node1)); d != "" {
		t.Errorf("node1 is not back to what it was:\n%s", d)
	}
}

// delRest DELs the target and the watching VM: node2 is as before any
// pod; the claim keeps the address with no user until it is deleted.
func (m *migration) delRest(ctx context.Context, t *testing.T) {
	for _, p := range []*cluster.Pod{m.target, m.watch} {
		if vm := m.vms[p]; vm != nil {
			if err := vm.Stop(); err != nil {
				t.Error(err)
			}
		}
		if p == m.target {
			m.vm.remove(ctx, t, p)
			continue
		}
		if err := p.Del(ctx); err != nil {
			t.Errorf("DEL %s: %v", p, err)
		}
		if err := p.Remove(); err != nil {
			t.Error(err)
		}
	}
	if d := m.baseline["node2"].Diff(state(t, m.node2)); d != "" {
		t.Errorf("node2 is not back to what it was:\n%s", d)
	}
	addr := []string{m.ip.Addr().String()}
	m.vm.expectHeld(ctx, t, addr)
	m.vm.expectFreedWithClaim(ctx, t, m.c, addr)
}

// await polls cond until it holds, failing the test after awaitLimit.
func (m *migration) await(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(awaitLimit)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			m.logWatchers(t)
			t.Fatalf("waited %v for %s", awaitLimit, what)
		}
		time.Sleep(50 * time.Millisecond) // the watchers' counters have no change event
	}
}

func (m *migration) logWatchers(t *testing.T) {
	t.Helper()
	for _, p := range m.pingers {
		t.Logf("ping %s: %s", p.Name, cluster.OutageOf(p.Replies()))
	}
	if m.stream != nil {
		n, last := m.stream.Echoed()
		t.Logf("tcp stream: %d echoed, last at %v, err %v", n, last.Format(time.StampMilli), m.stream.Err())
	}
	if vm := m.vms[m.watch]; vm != nil {
		t.Logf("vm-watch: %s", cluster.OutageOf(m.watchReplies()))
	}
}
