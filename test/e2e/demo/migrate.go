package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/e2e/cluster"
	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// The migrating VM, pinned as a user pins it today: its MAC as KubeVirt's
// macAddress (or KubeMacPool) gives it, its address through the pod's
// network selection (runtimeConfig.ips with the static IPAM).
var (
	migMAC  = net.HardwareAddr{0x02, 0xa5, 0x00, 0x00, 0x15, 0x05}
	migIP   = netip.MustParsePrefix("172.16.3.230/24")
	peerIP  = netip.MustParsePrefix("172.16.3.200/24")
	migOpts = cluster.PodOptions{MAC: migMAC, IPs: []netip.Prefix{migIP}}
)

// watcherVM is the VM (on node2, vmnet3) that pings the migrating one
// from inside its guest (tb.watch).
const watcherVM = "vm3"

// migrationRun is the state of the migration step.
type migrationRun struct {
	d          *demo
	src, dst   *cluster.Pod
	srcVM      *cluster.VM
	pingers    []*cluster.Pinger
	stream     *cluster.Stream
	capture    *cluster.Capture
	addedAt    time.Time
	switchedAt time.Time
	watchAtSw  int
	streamAtSw int
}

// migrate live-migrates a VM from node1 to node2 while a peer on the
// switch, both nodes and vm3 ping it and a TCP connection to it stays
// open, and prints the downtime they saw.
func (d *demo) migrate(ctx context.Context) error {
	fmt.Println()
	d.say("live migration: vm5 (MAC %s, address %s pinned) boots on node1 and moves to node2", migMAC, migIP)
	m := &migrationRun{d: d}
	steps := []func(context.Context) error{m.source, m.watchers, m.target, m.run, m.announce, m.downtime, m.delSource}
	for _, s := range steps {
		if err := s(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (m *migrationRun) source(ctx context.Context) error {
	d := m.d
	for _, n := range d.c.Nodes {
		key, err := n.PinnedVariant("vmnet3")
		if err != nil {
			return err
		}
		d.pinned = key
	}
	before, err := d.c.Node("node1").State()
	if err != nil {
		return err
	}
	d.node1BeforeMig = before
	if m.src, err = m.add(ctx, "node1", "vm5"); err != nil {
		return err
	}
	g := cluster.Guest{Pod: m.src, Retry: 90 * time.Second}
	d.migGuest = g
	d.say("  booting vm5 on node1")
	if m.srcVM, err = d.c.Boot(ctx, d.image, g); err != nil {
		return err
	}
	d.vms[m.src] = m.srcVM
	d.say("  vm5 is up after %.1fs", m.srcVM.Ready.Seconds())
	return nil
}

// add attaches a pod of the pinned network and checks it got the pinned
// MAC and address.
func (m *migrationRun) add(ctx context.Context, node, name string) (*cluster.Pod, error) {
	p, err := m.d.c.Node(node).AddPodWith(ctx, m.d.pinned, name, migOpts)
	if err != nil {
		return nil, err
	}
	m.d.pods = append(m.d.pods, p)
	m.d.say("  ADD %s on %s (%s, runtimeConfig.mac and .ips): IP %s, MAC %s, TAP %s", name, node, m.d.pinned, p.IP, p.MAC, p.Tap)
	if p.IP != migIP || !bytes.Equal(p.MAC, migMAC) {
		return nil, fmt.Errorf("%s got %s %s, want the pinned %s %s", name, p.IP, p.MAC, migIP, migMAC)
	}
	return p, nil
}

// watchers: a peer on the switch, each node from its host address and
// vm3 (tb.watch) ping vm5 10 times a second; the peer keeps a TCP
// connection to vm5's echo responder, a line every 100 ms.
func (m *migrationRun) watchers(ctx context.Context) error {
	d := m.d
	peer, err := d.c.AddPeer("peer", 1, peerIP)
	if err != nil {
		return err
	}
	from := []struct {
		ns   harness.Netns
		name string
		src  netip.Addr
	}{{peer, "peer", peerIP.Addr()}}
	for _, n := range d.c.Nodes {
		a, ok, err := n.HostAddr(migIP.Masked())
		if err != nil || !ok {
			return fmt.Errorf("%s has no host address on %s (%v)", n.Name, migIP.Masked(), err)
		}
		from = append(from, struct {
			ns   harness.Netns
			name string
			src  netip.Addr
		}{n.NS, n.Name, a.Addr()})
	}
	for _, f := range from {
		p, err := d.c.StartPinger(f.ns, fmt.Sprintf("%s %s", f.name, f.src), f.src, migIP.Addr())
		if err != nil {
			return err
		}
		m.pingers = append(m.pingers, p)
	}
	if m.stream, err = d.c.StartStream(peer, peerIP.Addr(), migIP.Addr()); err != nil {
		return err
	}
	d.say("  watching vm5: peer %s on the switch, node1 and node2 from their host addresses, and %s (from inside its guest) ping it every %v; the peer keeps one TCP connection to it, a line every %v",
		peerIP.Addr(), watcherVM, cluster.PingInterval, cluster.StreamInterval)
	return m.await(ctx, "every watcher to see vm5", func() bool {
		n, _ := m.stream.Echoed()
		ok := n >= 3 && len(m.watchReplies()) >= 3
		for _, p := range m.pingers {
			ok = ok && len(p.Replies()) >= 3
		}
		return ok
	})
}

func (m *migrationRun) watchReplies() []cluster.Reply {
	for p, vm := range m.d.vms {
		if p.Name == watcherVM {
			return cluster.ParseReplies(vm.Lines(), migIP.Addr())
		}
	}
	return nil
}

// target adds the target pod on node2 beside the live source (node1 must
// not change) and starts QEMU there waiting for the migration.
func (m *migrationRun) target(ctx context.Context) error {
	d := m.d
	node1 := d.c.Node("node1")
	before, err := node1.State()
	if err != nil {
		return err
	}
	if m.capture, err = d.c.CapturePort("node2"); err != nil {
		return err
	}
	m.addedAt = time.Now()
	if m.dst, err = m.add(ctx, "node2", "vm5-target"); err != nil {
		return err
	}
	after, err := node1.State()
	if err != nil {
		return err
	}
	if diff := before.Diff(after); diff != "" {
		return fmt.Errorf("the target's ADD changed node1:\n%s", diff)
	}
	dst, err := d.c.BootIncoming(ctx, d.image, d.migGuest, m.dst)
	if err != nil {
		return err
	}
	d.vms[m.dst] = dst
	port, err := d.c.SwitchFDB(migMAC)
	if err != nil {
		return err
	}
	d.say("  node1 unchanged by the target's ADD; QEMU waits on node2 (-incoming unix:…, on %s opened as uid %d); the switch forwards %s to %s", m.dst.Tap, guest.DefaultUID, migMAC, port)
	from := time.Now()
	return m.await(ctx, "2 s of traffic with the target waiting", func() bool {
		ok := true
		for _, p := range m.pingers {
			ok = ok && p.RepliesSince(from) >= 20
		}
		return ok
	})
}

// run migrates over the unix socket and stops the source QEMU.
func (m *migrationRun) run(ctx context.Context) error {
	d := m.d
	d.say("  migrating (QMP migrate on node1's QEMU, query-migrate until completed)")
	mig, err := guest.Migrate(ctx, m.srcVM.VM, d.vms[m.dst].VM)
	m.switchedAt = time.Now()
	if err != nil {
		return err
	}
	m.watchAtSw = len(m.watchReplies())
	m.streamAtSw, _ = m.stream.Echoed()
	d.say("  migration completed: %v in all, QEMU's downtime %v, %d MiB of RAM in %d passes", mig.Total, mig.Downtime, mig.RAMBytes>>20, mig.Passes)
	if err := m.srcVM.Quit(ctx); err != nil {
		return err
	}
	d.say("  source QEMU stopped (QMP quit)")
	return nil
}

// announce: QEMU's RARP from node2 moves the MAC on the switch; nothing
// with that MAC came from node2 before it.
func (m *migrationRun) announce(ctx context.Context) error {
	if err := m.await(ctx, "QEMU's RARP announce", func() bool { return countRARP(m.capture.From(migMAC)) > 0 }); err != nil {
		return err
	}
	frames := m.capture.From(migMAC)
	if frames[0].EtherType != cluster.EtherTypeRARP {
		return fmt.Errorf("node2 sent a frame from %s (ethertype %#04x) before QEMU's announce: a MAC flap", migMAC, frames[0].EtherType)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		port, err := m.d.c.SwitchFDB(migMAC)
		if err != nil {
			return err
		}
		if port == cluster.SwitchPort("node2") {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after the announce the switch still forwards %s to %q", migMAC, port)
		}
		time.Sleep(50 * time.Millisecond) // the FDB has no change event to await
	}
	m.d.say("  nothing from %s left node2 during the %.1fs from the target's ADD to QEMU's RARP announce; the switch now forwards it to %s",
		migMAC, frames[0].At.Sub(m.addedAt).Seconds(), cluster.SwitchPort("node2"))
	return nil
}

func countRARP(frames []cluster.Frame) int {
	n := 0
	for _, f := range frames {
		if f.EtherType == cluster.EtherTypeRARP {
			n++
		}
	}
	return n
}

// downtime waits for 20 answers to every watcher after the switch-over,
// then prints what each saw.
func (m *migrationRun) downtime(ctx context.Context) error {
	err := m.await(ctx, "20 answers to every watcher after the switch-over", func() bool {
		n, _ := m.stream.Echoed()
		ok := n >= m.streamAtSw+20 && len(m.watchReplies()) >= m.watchAtSw+20 && m.stream.Err() == nil
		for _, p := range m.pingers {
			ok = ok && p.RepliesSince(m.switchedAt) >= 20
		}
		return ok
	})
	if err != nil {
		return err
	}
	fmt.Printf("\nDowntime of vm5 across the migration, as its watchers saw it (a ping every %v):\n", cluster.PingInterval)
	for _, p := range m.pingers {
		fmt.Printf("  ping from %-22s %s\n", p.Name, p.Stop())
	}
	fmt.Printf("  ping from %-22s %s\n", watcherVM+" (guest, node2)", cluster.OutageOf(m.watchReplies()))
	res := m.stream.Stop()
	fmt.Printf("  tcp  from %-22s %s\n", "peer", res)
	frames := m.capture.From(migMAC)
	garp := 0
	for _, f := range frames {
		if f.GratuitousARP(migIP.Addr()) {
			garp++
		}
	}
	fmt.Printf("  announce seen on the switch from node2: %d RARP frames (QEMU), %d gratuitous ARP (the guest)\n\n", countRARP(frames), garp)
	return res.Err
}

// delSource DELs the source pod and checks node1 is as before vm5 came,
// while vm5 still answers on node2.
func (m *migrationRun) delSource(ctx context.Context) error {
	d := m.d
	if err := d.delPod(ctx, m.src); err != nil {
		return err
	}
	d.forget(m.src)
	after, err := d.c.Node("node1").State()
	if err != nil {
		return err
	}
	if diff := d.node1BeforeMig.Diff(after); diff != "" {
		return fmt.Errorf("node1 after the source's DEL is not as before vm5:\n%s", diff)
	}
	node2 := d.c.Node("node2")
	a, _, err := node2.HostAddr(migIP.Masked())
	if err != nil {
		return err
	}
	rtt, err := node2.Reach(ctx, a.Addr(), migIP.Addr(), 30*time.Second)
	if err != nil {
		return fmt.Errorf("vm5 after the source's DEL: %w", err)
	}
	d.say("  DEL of vm5 on node1: node1 is as it was before vm5; vm5 answers on node2 (ping %v, tcp echo ok)", rtt.Round(time.Microsecond))
	return nil
}

// await polls cond (the watchers' counters have no change event) for at
// most 2 minutes.
func (m *migrationRun) await(ctx context.Context, what string, cond func() bool) error {
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return errors.New("timed out waiting for " + what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
