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

// The migrating VM: its MAC pinned as KubeVirt's macAddress (or
// KubeMacPool) pins it, through the pod's network selection (the "mac"
// capability); its address its IPAMClaim's, on the persistent network.
// The peer on the switch takes an address below the NAD's range.
var (
	migMAC = net.HardwareAddr{0x02, 0xa5, 0x00, 0x00, 0x15, 0x05}
	peerIP = netip.MustParsePrefix("172.16.13.5/24")
)

// watcherVM is the VM (on node2, on the persistent network) whose pod is
// re-created before the migration and whose new guest pings the
// migrating one from inside (tb.watch).
const watcherVM = "vm4"

// migrationRun is the state of the migration step.
type migrationRun struct {
	d          *demo
	ip         netip.Prefix // vm5's address, its claim's
	src, dst   *cluster.Pod
	srcVM      *cluster.VM
	watch      *cluster.VM // vm4's guest on its re-created pod
	pingers    []*cluster.Pinger
	stream     *cluster.Stream
	capture    *cluster.Capture
	addedAt    time.Time
	switchedAt time.Time
	watchAtSw  int
	streamAtSw int
}

// migrate re-creates vm4's pod, then live-migrates a VM from node1 to
// node2 while a peer on the switch, both nodes and vm4 ping it and a TCP
// connection to it stays open, and prints the downtime they saw.
func (d *demo) migrate(ctx context.Context) error {
	fmt.Println()
	d.say("VM restart and live migration: vm4's pod is re-created; vm5 (MAC %s pinned, its address from IPAMClaim %s) boots on node1 and moves to node2",
		migMAC, "vm5."+persistentNet)
	m := &migrationRun{d: d}
	steps := []func(context.Context) error{m.source, m.boot, m.watchers, m.target, m.run, m.announce, m.downtime, m.delSource}
	for _, s := range steps {
		if err := s(ctx); err != nil {
			return err
		}
	}
	return nil
}

// source adds vm5's first pod on node1 (with a new claim), and re-creates
// vm4's pod on node2.
func (m *migrationRun) source(ctx context.Context) error {
	d := m.d
	before, err := d.c.Node("node1").State()
	if err != nil {
		return err
	}
	d.node1BeforeMig = before
	if m.src, err = m.add(ctx, "node1", "vm5"); err != nil {
		return err
	}
	m.ip = m.src.IP
	for _, p := range d.pods {
		if p.Name == watcherVM {
			if _, err := d.recreate(ctx, p); err != nil {
				return err
			}
			return nil
		}
	}
	return fmt.Errorf("no pod of %s to re-create", watcherVM)
}

// boot boots vm5 and vm4's new guest together, both with DHCP: the
// agents serve each its claim's address.
func (m *migrationRun) boot(ctx context.Context) error {
	d := m.d
	var watchPod *cluster.Pod
	for _, p := range d.pods {
		if p.Name == watcherVM {
			watchPod = p
		}
	}
	guests := []cluster.Guest{
		{Pod: m.src, DHCP: true, Retry: 90 * time.Second},
		{Pod: watchPod, DHCP: true, Retry: 90 * time.Second, Watch: m.ip.Addr()},
	}
	d.migGuest = guests[0]
	d.say("  booting vm5 on node1 and vm4 again on node2 (DHCP from the agents; vm4 then pings vm5 10 times a second)")
	vms, err := d.c.BootAll(ctx, d.image, guests, 2, 0, nil)
	for _, vm := range vms {
		if vm != nil {
			d.vms[vm.Pod] = vm
		}
	}
	if err != nil {
		return err
	}
	m.srcVM, m.watch = vms[0], vms[1]
	for _, vm := range vms {
		if vm.Got.IP != vm.Pod.IP {
			return fmt.Errorf("%s's guest got %s by %s, its claim's address is %s", vm.Pod.Name, vm.Got.IP, vm.Got.From4, vm.Pod.IP)
		}
		d.say("  %s is up after %.1fs; its guest got %s by %s from %s's agent: its claim's address ✓", vm.Pod.Name, vm.Ready.Seconds(), vm.Got.IP, vm.Got.From4, vm.Pod.Node.Name)
	}
	return nil
}

// add attaches a pod of vm5 (its claim, the pinned MAC) and checks it
// got the pinned MAC (addVM checks the address).
func (m *migrationRun) add(ctx context.Context, node, name string) (*cluster.Pod, error) {
	p, err := m.d.addVM(ctx, node, name, "vm5", cluster.PodOptions{MAC: migMAC})
	if err != nil {
		return nil, err
	}
	m.d.say("  ADD %s on %s (pod %s, runtimeConfig.mac, ipam-claim-reference %s): IP %s, MAC %s, TAP %s",
		name, node, p.Object().Name, m.d.claim("vm5").name, p.IP, p.MAC, p.Tap)
	if !bytes.Equal(p.MAC, migMAC) {
		return nil, fmt.Errorf("%s got MAC %s, want the pinned %s", name, p.MAC, migMAC)
	}
	return p, nil
}

// watchers: a peer on the switch and each node from its host address
// ping vm5 10 times a second, as vm4 does from its guest (tb.watch); the
// peer keeps a TCP connection to vm5's echo responder, a line every 100 ms.
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
		a, ok, err := n.HostAddr(m.ip.Masked())
		if err != nil || !ok {
			return fmt.Errorf("%s has no host address on %s (%v)", n.Name, m.ip.Masked(), err)
		}
		from = append(from, struct {
			ns   harness.Netns
			name string
			src  netip.Addr
		}{n.NS, n.Name, a.Addr()})
	}
	for _, f := range from {
		p, err := d.c.StartPinger(f.ns, fmt.Sprintf("%s %s", f.name, f.src), f.src, m.ip.Addr())
		if err != nil {
			return err
		}
		m.pingers = append(m.pingers, p)
	}
	if m.stream, err = d.c.StartStream(peer, peerIP.Addr(), m.ip.Addr()); err != nil {
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
	return cluster.ParseReplies(m.watch.Lines(), m.ip.Addr())
}

// target adds the target pod on node2 beside the live source (node1 must
// not change; the target gets the claim's address, which the source
// holds) and starts QEMU there waiting for the migration.
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
	a, err := d.allocationOf(ctx, d.claim("vm5"))
	if err != nil {
		return err
	}
	if len(a.Users) != 2 {
		return fmt.Errorf("IPAllocation %s has users %v, want the source and the target", a.Name, a.Users)
	}
	d.say("  the target got %s, the source's address, from the same claim: IPAllocation %s has 2 users (source and target) ✓", m.dst.IP, a.Name)
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
		if f.GratuitousARP(m.ip.Addr()) {
			garp++
		}
	}
	fmt.Printf("  announce seen on the switch from node2: %d RARP frames (QEMU), %d gratuitous ARP (the guest)\n\n", countRARP(frames), garp)
	return res.Err
}

// delSource DELs the source pod (and deletes its pod object) and checks
// that node1 is as before vm5 came, that the claim's address stays with
// the target, and that vm5 still answers on node2.
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
	a, err := d.allocationOf(ctx, d.claim("vm5"))
	if err != nil {
		return err
	}
	if len(a.Users) != 1 || a.Users[0] != m.dst.ContainerID {
		return fmt.Errorf("after the source's DEL IPAllocation %s has users %v, want the target's %s only", a.Name, a.Users, m.dst.ContainerID)
	}
	node2 := d.c.Node("node2")
	h, _, err := node2.HostAddr(m.ip.Masked())
	if err != nil {
		return err
	}
	rtt, err := node2.Reach(ctx, h.Addr(), m.ip.Addr(), 30*time.Second)
	if err != nil {
		return fmt.Errorf("vm5 after the source's DEL: %w", err)
	}
	d.say("  DEL of vm5's source on node1, pod deleted: node1 is as it was before vm5; %s stays vm5's (IPAllocation %s, the target its only user) ✓; vm5 answers on node2 (ping %v, tcp echo ok)",
		m.ip.Addr(), a.Name, rtt.Round(time.Microsecond))
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
