package e2e

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/test/e2e/cluster"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// TestLibvirtLauncher runs the plugin's TAP the way KubeVirt's non-root
// virt-launcher does: libvirt (session mode, as uid 107, inside the pod
// netns) starts a TCG guest on <interface type='ethernet'> with the TAP
// as an unmanaged target and the pod interface's MAC and MTU. The TAP is
// opened by uid 107 (libvirt's TUNSETIFF, through the launcher's own
// /dev/net/tun), the guest, a peer guest on the other node and both nodes
// reach each other, and after virsh destroy and DEL each node is as it
// was, the pod netns holds only lo, and the machine's root netns has no
// new link (libvirt made no virbr0 or anything else).
func TestLibvirtLauncher(t *testing.T) {
	requireLibvirt(t)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	rootBefore := rootState(t)
	c := newCluster(t)
	node1, node2 := c.Node("node1"), c.Node("node2")
	baseline := []harness.State{state(t, node1), state(t, node2)}
	p := addPod(ctx, t, node1, "vmnet13", "vm-libvirt")
	peer := addPod(ctx, t, node2, "vmnet13", "vm-peer")
	l := startLauncher(ctx, t, p)
	t.Logf("libvirtd %d (qemu:///session as uid %d) up in the pod netns after %v", l.PID(), qemuUID, time.Since(start).Round(time.Millisecond))
	expectNoLibvirtNetwork(ctx, t, l)

	n1, n2 := hostAddr(t, node1, subnet13).Addr(), hostAddr(t, node2, subnet13).Addr()
	g := cluster.Guest{Pod: p, Ping: []netip.Addr{n1, n2, peer.IP.Addr()}, TCP: []netip.Addr{n1}, Retry: 90 * time.Second}
	d := virtLauncherDomain(t, l, "vm-libvirt", 0, g.Cmdline())
	if err := l.create(ctx, d); err != nil {
		t.Fatal(err)
	}
	expectOpenedByQEMUUser(t, l, d.Name, p.Tap, 1)
	expectNICFromPod(t, l, d)
	vms := bootGuests(ctx, t, c, []cluster.Guest{{Pod: peer, Ping: []netip.Addr{p.IP.Addr(), n2}}})
	ready, err := l.waitConsole(ctx, d.Name, "TBREADY")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ready, "mac="+d.MAC) {
		t.Errorf("the guest's MAC is not the pod interface's %s: %s", d.MAC, ready)
	}
	expectLauncherProbes(ctx, t, l, d.Name, "ping "+n1.String(), "ping "+n2.String(), "ping "+peer.IP.Addr().String(), "tcp "+n1.String()+":7777")
	expectProbes(ctx, t, vms[0], "ping "+p.IP.Addr().String(), "ping "+n2.String())
	reach(ctx, t, node1, p)
	reach(ctx, t, node2, p)
	if err := p.Check(ctx); err != nil {
		t.Errorf("CHECK with the libvirt guest running: %v", err)
	}

	if err := l.destroy(ctx, d.Name); err != nil {
		t.Error(err)
	}
	if err := vms[0].Stop(); err != nil {
		t.Error(err)
	}
	for _, pod := range []*cluster.Pod{p, peer} {
		if err := pod.Del(ctx); err != nil {
			t.Errorf("DEL %s: %v", pod, err)
		}
	}
	endLauncher(t, l)
	for _, pod := range []*cluster.Pod{p, peer} {
		if err := pod.Remove(); err != nil {
			t.Error(err)
		}
	}
	for i, n := range []*cluster.Node{node1, node2} {
		if diff := baseline[i].Diff(state(t, n)); diff != "" {
			t.Errorf("%s is not back to what it was:\n%s", n.Name, diff)
		}
	}
	expectRootState(t, rootBefore)
	t.Logf("libvirt launcher tier: %v", time.Since(start).Round(time.Millisecond))
}

// TestLibvirtMultiQueue proves the README's "what must match" through
// libvirt: a domain with queues='2' on a multi-queue TAP starts and the
// guest uses both queues (QEMU holds two queues of the TAP); on a
// single-queue TAP that domain, and a plain single-queue domain on the
// multi-queue TAP, fail to start with the kernel's EINVAL in libvirt's
// error, start no QEMU, and leave the attachment intact.
func TestLibvirtMultiQueue(t *testing.T) {
	requireLibvirt(t)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	rootBefore := rootState(t)
	c := newCluster(t)
	node1, node2 := c.Node("node1"), c.Node("node2")
	baseline := []harness.State{state(t, node1), state(t, node2)}
	pm := addPod(ctx, t, node1, multiQueueVariant(t, node1, "vmnet13"), "vm-mq")
	ps := addPod(ctx, t, node1, "vmnet13", "vm-sq")
	lm, ls := startLauncher(ctx, t, pm), startLauncher(ctx, t, ps)

	expectEINVAL(ctx, t, lm, virtLauncherDomain(t, lm, "plain-on-mq", 0, ""))
	expectEINVAL(ctx, t, ls, virtLauncherDomain(t, ls, "mq-on-sq", 2, ""))
	for _, pod := range []*cluster.Pod{pm, ps} {
		if err := pod.Check(ctx); err != nil {
			t.Errorf("CHECK %s after the refused start: %v", pod, err)
		}
	}

	n1 := hostAddr(t, node1, subnet13).Addr()
	g := cluster.Guest{Pod: pm, Ping: []netip.Addr{n1}, Retry: 90 * time.Second}
	d := virtLauncherDomain(t, lm, "vm-mq", 2, g.Cmdline())
	if err := lm.create(ctx, d); err != nil {
		t.Fatal(err)
	}
	expectOpenedByQEMUUser(t, lm, d.Name, pm.Tap, 2)
	ready, err := lm.waitConsole(ctx, d.Name, "TBREADY")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ready, "queues=2") {
		t.Errorf("guest does not use 2 queues: %s", ready)
	}
	out, err := exec.Command("ip", "-n", pm.NS.Name, "-d", "link", "show", pm.Tap).CombinedOutput()
	queues := regexp.MustCompile(`multi_queue numqueues \d+ numdisabled \d+`).Find(out)
	if err != nil || !regexp.MustCompile(`numqueues 2 numdisabled 0`).Match(queues) {
		t.Errorf("%s does not have 2 queues attached and enabled (%v):\n%s", pm.Tap, err, out)
	}
	t.Logf("guest: %s; %s: %s; %s", ready, pm.Tap, queues, vhostNote())
	expectLauncherProbes(ctx, t, lm, d.Name, "ping "+n1.String())
	reach(ctx, t, node1, pm)

	if err := lm.destroy(ctx, d.Name); err != nil {
		t.Error(err)
	}
	for _, pod := range []*cluster.Pod{pm, ps} {
		if err := pod.Del(ctx); err != nil {
			t.Errorf("DEL %s: %v", pod, err)
		}
	}
	endLauncher(t, lm)
	endLauncher(t, ls)
	for _, pod := range []*cluster.Pod{pm, ps} {
		if err := pod.Remove(); err != nil {
			t.Error(err)
		}
	}
	for i, n := range []*cluster.Node{node1, node2} {
		if diff := baseline[i].Diff(state(t, n)); diff != "" {
			t.Errorf("%s is not back to what it was:\n%s", n.Name, diff)
		}
	}
	expectRootState(t, rootBefore)
	t.Logf("libvirt multi-queue tier: %v", time.Since(start).Round(time.Millisecond))
}

// virtLauncherDomain copies the MAC and MTU of the pod interface
// (pod<hash>), read from the pod netns as virt-launcher reads them, into
// a domain on the pod's TAP. The MAC must be the guest MAC of the result.
// The domain's name ends in the launcher's own random suffix, so that the
// QEMUs of other runs on the machine are never mistaken for its own.
func virtLauncherDomain(t *testing.T, l *launcher, name string, queues int, cmdline string) domain {
	t.Helper()
	var link netlink.Link
	err := l.pod.NS.Do(func() (err error) {
		link, err = netlink.LinkByName(l.pod.IfName)
		return err
	})
	if err != nil {
		t.Fatalf("pod interface %s of %s: %v", l.pod.IfName, l.pod.Name, err)
	}
	mac := link.Attrs().HardwareAddr
	if !slices.Equal(mac, l.pod.MAC) {
		t.Errorf("pod interface %s has MAC %s, the result says %s", l.pod.IfName, mac, l.pod.MAC)
	}
	name += strings.TrimPrefix(filepath.Base(l.dir), "tblibvirt")
	return domain{Name: name, Tap: l.pod.Tap, MAC: net.HardwareAddr(mac).String(), MTU: link.Attrs().MTU,
		Queues: queues, VCPUs: max(queues, 1), Cmdline: cmdline, Launcher: l}
}

// expectNoLibvirtNetwork: libvirt has no network of its own (no
// "default" network, so no virbr0), and the pod netns holds just what the
// plugin made, with no nftables table (the daemon has no capability to
// touch a firewall anywhere; this machine has no iptables binary either).
func expectNoLibvirtNetwork(ctx context.Context, t *testing.T, l *launcher) {
	t.Helper()
	out, err := l.virsh(ctx, "net-list", "--all", "--name")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "" {
		t.Errorf("libvirt has networks: %q", out)
	}
	want := []string{"lo", l.pod.IfName, l.pod.Tap}
	slices.Sort(want)
	if got := podLinks(t, l.pod); !slices.Equal(got, want) {
		t.Errorf("pod netns with libvirtd running holds %v, want %v", got, want)
	}
	if tables, err := podNftTables(l.pod.NS.Path()); err != nil || len(tables) > 0 {
		t.Errorf("pod netns with libvirtd running has nftables tables %v (%v)", tables, err)
	}
}

// expectEINVAL starts d and requires libvirt to refuse it with the
// kernel's EINVAL from TUNSETIFF, leaving no domain and no QEMU behind.
func expectEINVAL(ctx context.Context, t *testing.T, l *launcher, d domain) {
	t.Helper()
	err := l.create(ctx, d)
	want := regexp.MustCompile(`Unable to create tap device ` + regexp.QuoteMeta(d.Tap) + `: Invalid argument`)
	switch {
	case err == nil:
		t.Errorf("domain %s (queues %d) started on %s", d.Name, d.Queues, d.Tap)
		_ = l.destroy(ctx, d.Name)
	case !want.MatchString(err.Error()):
		t.Errorf("domain %s (queues %d) on %s: got %v, want %q", d.Name, d.Queues, d.Tap, err, want)
	default:
		t.Logf("domain %s (queues %d) on %s refused: %s", d.Name, d.Queues, d.Tap, want.FindString(err.Error()))
	}
	if out, err := l.virsh(ctx, "list", "--all", "--name"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("libvirt lists domains after the refused start: %q (%v)", out, err)
	}
	if pids := qemuPIDsOf(d.Name); len(pids) > 0 {
		t.Errorf("QEMU %v of the refused domain %s runs", pids, d.Name)
	}
}

func expectLauncherProbes(ctx context.Context, t *testing.T, l *launcher, name string, want ...string) {
	t.Helper()
	got, err := l.probes(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		p, ok := got[w]
		switch {
		case !ok:
			t.Errorf("%s: no result for %q", name, w)
		case !p.OK:
			t.Errorf("%s: %s", name, p.Line)
		default:
			t.Logf("%s: %s", name, p.Line)
		}
	}
}

// endLauncher kills libvirtd (by PID) and requires that no process is
// left in the pod netns and that it holds only lo.
func endLauncher(t *testing.T, l *launcher) {
	t.Helper()
	if err := l.stop(); err != nil {
		t.Error(err)
	}
	if pids, err := pidsInNetns(l.pod.NS.Path()); err != nil || len(pids) > 0 {
		t.Errorf("processes %v left in %s's netns (%v)", pids, l.pod.Name, err)
	}
	if links := podLinks(t, l.pod); !slices.Equal(links, []string{"lo"}) {
		t.Errorf("%s's netns after DEL holds %v, want only lo", l.pod.Name, links)
	}
}

func rootState(t *testing.T) []string {
	t.Helper()
	s, err := rootNetnsState()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// expectRootState: the machine's root netns has the links and nftables
// tables it had (libvirt and the test made none there).
func expectRootState(t *testing.T, before []string) {
	t.Helper()
	after := rootState(t)
	if added := missing(after, before); len(added) > 0 {
		t.Errorf("new in the root netns: %v", added)
	}
}

// vhostNote says where the virtio-net datapath runs: the domain asks for
// driver vhost as KubeVirt does, and libvirt falls back to QEMU's own
// when /dev/vhost-net is not there (this machine has no vhost_net); the
// -netdev logged above shows a vhostfd when it is used.
func vhostNote() string {
	if _, err := os.Stat("/dev/vhost-net"); err != nil {
		return "driver vhost requested; /dev/vhost-net is absent, so virtio-net runs in QEMU"
	}
	return "driver vhost requested; /dev/vhost-net is present (see -netdev for a vhostfd)"
}
