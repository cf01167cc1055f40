package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/e2e/cluster"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// The DHCP tests run vmnet3-dhcp (conf/cni): vmnet3's subnet, dual-stack,
// served by the node agent. Guests boot with no address and get theirs
// from the agent, with real clients (busybox udhcpc, Debian's dhclient -6).
var (
	// The L2's own DHCP server (dnsmasq) on a host plugged into the
	// switch, offering other addresses of the same subnets.
	l2DHCPAddrs  = []netip.Prefix{netip.MustParsePrefix("172.16.3.2/24"), netip.MustParsePrefix("fd00:3::2/64")}
	l2DHCPRanges = []string{"172.16.3.100,172.16.3.120,255.255.255.0,2m", "fd00:3::100,fd00:3::120,64,2m"}
)

// TCG boots, leases of a minute and their renewals: generous bounds.
const (
	dhcpTimeout = 12 * time.Minute
	renewLimit  = 2 * time.Minute // a 1m lease renews every 30 s
)

// variant registers the variant key of vmnet3-dhcp on every node.
func variant(t *testing.T, c *cluster.Cluster, key string, edits ...cluster.Edit) string {
	t.Helper()
	for _, n := range c.Nodes {
		if _, err := n.Variant("vmnet3-dhcp", key, edits...); err != nil {
			t.Fatal(err)
		}
	}
	return key
}

// served registers vmnet3-dhcp with leases of leaseTime ("" for the
// conflist's).
func served(t *testing.T, c *cluster.Cluster, leaseTime string) string {
	if leaseTime == "" {
		return variant(t, c, "vmnet3-dhcp")
	}
	return variant(t, c, "vmnet3-dhcp", cluster.Serve(leaseTime))
}

// dhcpGuest is a guest that gets both its addresses by DHCP.
func dhcpGuest(p *cluster.Pod) cluster.Guest { return cluster.Guest{Pod: p, DHCP: true, DHCP6: true} }

// expectServed: the guest holds exactly its IPAM addresses, got by DHCP
// and DHCPv6 from its own node (the server identifier is the node's host
// address on the subnet).
func expectServed(t *testing.T, vm *cluster.VM) {
	t.Helper()
	p, got := vm.Pod, vm.Got
	if got.IP != p.IP || got.From4 != "dhcp4" {
		t.Errorf("%s: IPv4 %s from %s, want its IPAM address %s from dhcp4", p.Name, got.IP, got.From4, p.IP)
	}
	if p.IP6.IsValid() && (got.IP6.Addr() != p.IP6.Addr() || got.From6 != "dhcp6") {
		t.Errorf("%s: IPv6 %s from %s, want its IPAM address %s from dhcp6", p.Name, got.IP6, got.From6, p.IP6.Addr())
	}
	host := hostAddr(t, p.Node, p.IP.Masked())
	for _, l := range vm.Leases() {
		if l.Family == 4 && l.Server != host.Addr().String() {
			t.Errorf("%s: %s: the server is not %s's host address %s", p.Name, l.Line, p.Node.Name, host.Addr())
		}
	}
	t.Logf("%s: %s", p, got.Line)
}

// reach6 checks ICMPv6 and TCP from node n (source: its IPv6 host
// address) to the guest's IPv6 address: the guest has its address and
// the prefix is on-link for it (the agent's router advertisement).
func reach6(ctx context.Context, t *testing.T, n *cluster.Node, p *cluster.Pod) {
	t.Helper()
	src := hostAddr(t, n, p.IP6.Masked())
	rtt, err := n.Reach(ctx, src.Addr(), p.IP6.Addr(), 30*time.Second)
	if err != nil {
		t.Errorf("%s -> %s: %v", n.Name, p.IP6.Addr(), err)
		return
	}
	t.Logf("%s (%s) -> %s: ping %v, tcp echo ok", n.Name, src.Addr(), p.IP6.Addr(), rtt)
}

// tearDown stops the guests, DELs and removes their pods, and requires
// every node to be as before the test.
func tearDown(ctx context.Context, t *testing.T, c *cluster.Cluster, baseline map[string]harness.State, vms ...*cluster.VM) {
	t.Helper()
	for _, vm := range vms {
		if err := vm.Stop(); err != nil {
			t.Error(err)
		}
		if err := vm.Pod.Del(ctx); err != nil {
			t.Errorf("DEL %s: %v", vm.Pod, err)
		}
		if err := vm.Pod.Remove(); err != nil {
			t.Error(err)
		}
	}
	for _, n := range c.Nodes {
		if d := baseline[n.Name].Diff(state(t, n)); d != "" {
			t.Errorf("%s is not back to what it was:\n%s", n.Name, d)
		}
	}
}

func baselines(t *testing.T, c *cluster.Cluster) map[string]harness.State {
	t.Helper()
	b := map[string]harness.State{}
	for _, n := range c.Nodes {
		b[n.Name] = state(t, n)
	}
	return b
}

// TestDHCPForeignServer: a DHCP server on the L2 (dnsmasq, on a host
// plugged into the switch) offers other addresses of the same subnets.
// A guest of a served network gets exactly its IPAM addresses from its
// node's agent, and dnsmasq never hears from it; a guest of a network
// the agent does not serve (no IPAM) gets its addresses from dnsmasq, as
// before the agent existed.
func TestDHCPForeignServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), dhcpTimeout)
	defer cancel()
	c := newCluster(t)
	baseline := baselines(t, c)
	servedNet := served(t, c, "")
	l2Net := variant(t, c, "vmnet3-l2dhcp", cluster.NoIPAM)
	srv := startDNSMasq(t, c, l2DHCPAddrs, l2DHCPRanges)

	a := addPod(ctx, t, c.Node("node1"), servedNet, "vm-served")
	b := addPod(ctx, t, c.Node("node2"), l2Net, "vm-l2")
	vms := bootGuests(ctx, t, c, []cluster.Guest{dhcpGuest(a), dhcpGuest(b)})

	expectServed(t, vms[0])
	reach(ctx, t, a.Node, a)
	reach6(ctx, t, a.Node, a)

	// The other guest is dnsmasq's: addresses of its ranges, its server id.
	got := vms[1].Got
	if !inRange(got.IP.Addr(), "172.16.3.100", "172.16.3.120") || got.IP.Bits() != 24 || got.From4 != "dhcp4" {
		t.Errorf("%s (not served): IPv4 %s from %s, want one of dnsmasq's 172.16.3.100-120/24 from dhcp4", b.Name, got.IP, got.From4)
	}
	if !inRange(got.IP6.Addr(), "fd00:3::100", "fd00:3::120") || got.From6 != "dhcp6" {
		t.Errorf("%s (not served): IPv6 %s from %s, want one of dnsmasq's fd00:3::100-120 from dhcp6", b.Name, got.IP6, got.From6)
	}
	for _, l := range vms[1].Leases() {
		if l.Family == 4 && l.Server != l2DHCPAddrs[0].Addr().String() {
			t.Errorf("%s: %s: want dnsmasq's %s as the server", b.Name, l.Line, l2DHCPAddrs[0].Addr())
		}
	}
	t.Logf("%s (not served): %s", b, got.Line)

	log := srv.stop(t)
	if n := strings.Count(log, a.MAC.String()); n != 0 {
		t.Errorf("dnsmasq heard %d times from the served guest %s:\n%s", n, a.MAC, log)
	}
	if !strings.Contains(log, "DHCPACK(eth0) "+got.IP.Addr().String()+" "+b.MAC.String()) {
		t.Errorf("dnsmasq's log lacks its DHCPACK of %s to %s:\n%s", got.IP.Addr(), b.MAC, log)
	}
	if !strings.Contains(log, "DHCPREPLY(eth0) "+got.IP6.Addr().String()) {
		t.Errorf("dnsmasq's log lacks its DHCPv6 reply of %s:\n%s", got.IP6.Addr(), log)
	}
	t.Logf("dnsmasq answered %s only: %d DHCPACK, %d DHCPREPLY, nothing from %s",
		b.MAC, strings.Count(log, "DHCPACK("), strings.Count(log, "DHCPREPLY("), a.MAC)
	tearDown(ctx, t, c, baseline, vms...)
}

func inRange(a netip.Addr, from, to string) bool {
	return a.IsValid() && a.Compare(netip.MustParseAddr(from)) >= 0 && a.Compare(netip.MustParseAddr(to)) <= 0
}

// dnsmasq is Debian's dnsmasq run by the test as the L2's own DHCP
// server: its own config, lease and pid files in a temp dir, in the
// foreground, killed by PID.
type dnsmasq struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startDNSMasq plugs a host holding addrs into the switch and runs
// dnsmasq there, DHCP only (no DNS), for ranges, with router
// advertisements (M=1, router lifetime 0: the L2 has no router) so its
// DHCPv6 clients learn the prefix is on-link.
func startDNSMasq(t *testing.T, c *cluster.Cluster, addrs []netip.Prefix, ranges []string) *dnsmasq {
	t.Helper()
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		t.Fatalf("dnsmasq (scripts/deps/dhcp-client.sh installs dnsmasq-base): %v", err)
	}
	ns, err := c.AddPeer("dhcp", 2, addrs...)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	args := []string{"--no-daemon", "--conf-file=/dev/null", "--port=0", "--interface=eth0", "--bind-interfaces",
		"--user=root", "--group=root", "--log-dhcp", "--log-facility=-", "--enable-ra", "--ra-param=eth0,10,0",
		"--dhcp-leasefile=" + filepath.Join(dir, "leases"), "--pid-file=" + filepath.Join(dir, "pid")}
	for _, r := range ranges {
		args = append(args, "--dhcp-range="+r)
	}
	d := &dnsmasq{log: filepath.Join(dir, "dnsmasq.log"), done: make(chan struct{})}
	out, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = out, out
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := ns.Do(d.cmd.Start); err != nil {
		out.Close()
		t.Fatalf("start dnsmasq: %v", err)
	}
	go func() { _ = d.cmd.Wait(); out.Close(); close(d.done) }()
	t.Cleanup(func() { d.stop(t) })
	d.waitLog(t, "DHCPv6, IP range")
	t.Logf("dnsmasq (pid %d) on %v: %s", d.cmd.Process.Pid, addrs, strings.Join(ranges, "; "))
	return d
}

func (d *dnsmasq) waitLog(t *testing.T, s string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(d.log)
		if strings.Contains(string(b), s) {
			return
		}
		select {
		case <-d.done:
			t.Fatalf("dnsmasq exited (%v):\n%s", d.cmd.ProcessState, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dnsmasq did not log %q:\n%s", s, b)
		}
	}
}

// stop kills dnsmasq by PID, reaps it and returns its log.
func (d *dnsmasq) stop(t *testing.T) string {
	t.Helper()
	select {
	case <-d.done:
	default:
		_ = d.cmd.Process.Kill()
		<-d.done
	}
	b, err := os.ReadFile(d.log)
	if err != nil {
		t.Error(err)
	}
	return string(b)
}

// TestDHCPAgentRestart: SIGKILL of the node agent while two guests hold
// one-minute leases (IPv4 and IPv6), and a restart at once, as the
// DaemonSet's pod is restarted. The new agent keeps no state of its own:
// it answers the guests' renewals (due 30 s after they bound) from the
// plugin's records, with the same addresses, and no guest ever loses an
// address: pings to both families of both guests go on throughout.
func TestDHCPAgentRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), dhcpTimeout)
	defer cancel()
	c := newCluster(t)
	node1 := c.Node("node1")
	baseline := baselines(t, c)
	key := served(t, c, "1m")
	a := addPod(ctx, t, node1, key, "vm-a")
	b := addPod(ctx, t, node1, key, "vm-b")
	vms := bootGuests(ctx, t, c, []cluster.Guest{dhcpGuest(a), dhcpGuest(b)})
	for _, vm := range vms {
		expectServed(t, vm)
	}
	pingers := startPingers(t, c, node1, a, b)

	before := renewals(vms)
	old := node1.AgentPID()
	if err := node1.KillAgent(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	from := node1.AgentLogEnd()
	if err := node1.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGKILL of node1's agent (pid %d) with both guests' leases held; the new agent (pid %d) started %v later; renewals answered so far: %v",
		old, node1.AgentPID(), time.Since(killed).Round(time.Millisecond), before)
	for _, vm := range vms {
		if _, err := node1.WaitAgentLog(ctx, from, func(l cluster.AgentLogLine) bool {
			return l.Msg == "serving" && l.Attachment == vm.Pod.Key()
		}); err != nil {
			t.Fatal(err)
		}
	}

	for _, vm := range vms {
		for _, fam := range []int{4, 6} {
			l := waitRenewal(ctx, t, vm, fam, before[vm.Pod.Name])
			t.Logf("%s renewed with the restarted agent: %s", vm.Pod.Name, l)
		}
		expectAgentReplied(t, node1, from, vm.Pod)
	}
	for _, p := range pingers {
		o := p.Stop()
		t.Logf("ping %s: %s", p.Name, o)
		// 1 s: what a busy TCG guest may take to answer, far below a
		// lost address (udhcpc's deconfig, then DISCOVER again: ~4 s).
		if o.Received == 0 || o.LongestGap > time.Second {
			t.Errorf("ping %s: %s: the guest lost its address", p.Name, o)
		}
	}
	for _, vm := range vms {
		expectNoLoss(t, vm)
	}
	tearDown(ctx, t, c, baseline, vms...)
}

// startPingers pings each pod's IPv4 and IPv6 address from the node's
// host addresses, and waits for the first replies.
func startPingers(t *testing.T, c *cluster.Cluster, n *cluster.Node, pods ...*cluster.Pod) []*cluster.Pinger {
	t.Helper()
	var out []*cluster.Pinger
	for _, p := range pods {
		for _, dst := range []netip.Prefix{p.IP, p.IP6} {
			src := hostAddr(t, n, dst.Masked())
			pg, err := c.StartPinger(n.NS, fmt.Sprintf("%s -> %s %s", n.Name, p.Name, dst.Addr()), src.Addr(), dst.Addr())
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, pg)
		}
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) { // pings have no change event
		ok := true
		for _, p := range out {
			ok = ok && len(p.Replies()) >= 3
		}
		if ok {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatal("the guests do not answer pings")
		}
	}
}

// renewals counts the answered renewals each guest printed so far.
type renewalCount map[string]int

func renewals(vms []*cluster.VM) renewalCount {
	out := renewalCount{}
	for _, vm := range vms {
		for _, l := range vm.Leases() {
			if l.Renewal() {
				out[vm.Pod.Name]++
			}
		}
	}
	return out
}

func (r renewalCount) String() string { return fmt.Sprint(map[string]int(r)) }

// waitRenewal waits for a renewal of family fam after the guest's first
// skip renewals, and requires it to carry the guest's IPAM address.
func waitRenewal(ctx context.Context, t *testing.T, vm *cluster.VM, fam, skip int) string {
	t.Helper()
	want := vm.Pod.IP
	if fam == 6 {
		want = vm.Pod.IP6
	}
	for deadline := time.Now().Add(renewLimit); ; time.Sleep(100 * time.Millisecond) { // the console has no per-kind event
		seen := 0
		for _, l := range vm.Leases() {
			if !l.Renewal() {
				continue
			}
			if seen++; seen > skip && l.Family == fam {
				if l.Addr.Addr() != want.Addr() {
					t.Errorf("%s: %s: want %s", vm.Pod.Name, l.Line, want.Addr())
				}
				return l.Line
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("%s: no IPv%d renewal answered within %v", vm.Pod.Name, fam, renewLimit)
		}
	}
}

// expectAgentReplied: the node's agent log, from offset on, shows a DHCP
// ACK and a DHCPv6 Reply sent to the pod's attachment.
func expectAgentReplied(t *testing.T, n *cluster.Node, offset int64, p *cluster.Pod) {
	t.Helper()
	lines, err := n.AgentLog(offset)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, l := range lines {
		if l.Msg == "reply sent" && l.Attachment == p.Key() {
			got[l.Protocol+" "+l.Type]++
		}
	}
	if got["dhcp4 ack"] == 0 || got["dhcp6 reply"] == 0 {
		t.Errorf("%s's agent sent %s %v, want DHCPv4 ACKs and DHCPv6 Replies", n.Name, p.Name, got)
	}
}

// expectNoLoss: the guest's clients never removed an address.
func expectNoLoss(t *testing.T, vm *cluster.VM) {
	t.Helper()
	for _, l := range vm.Leases() {
		if l.Lost() {
			t.Errorf("%s lost an address: %s", vm.Pod.Name, l.Line)
		}
	}
}

// TestDHCPSameAddress: a guest whose MAC is fixed (KubeVirt's macAddress,
// runtimeConfig.mac) and whose pod is deleted and created again with the
// same IPAM result (runtimeConfig.ips, static IPAM) gets the same
// addresses by DHCP both times.
func TestDHCPSameAddress(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), dhcpTimeout)
	defer cancel()
	c := newCluster(t)
	node1 := c.Node("node1")
	baseline := baselines(t, c)
	key := variant(t, c, "vmnet3-dhcp-pinned", cluster.Pin)
	opts := cluster.PodOptions{
		MAC: net.HardwareAddr{0x02, 0xa5, 0x00, 0x00, 0x13, 0x01},
		IPs: []netip.Prefix{netip.MustParsePrefix("172.16.3.231/24"), netip.MustParsePrefix("fd00:3::231/64")},
	}
	var first *cluster.VM
	for i := 1; i <= 2; i++ {
		p, err := node1.AddPodWith(ctx, key, "vm-fixed", opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("pod %d: ADD %s, MAC %s", i, p, p.MAC)
		vm := bootGuests(ctx, t, c, []cluster.Guest{dhcpGuest(p)})[0]
		expectServed(t, vm)
		if first != nil && (vm.Got.IP != first.Got.IP || vm.Got.IP6 != first.Got.IP6 || vm.Got.MAC != first.Got.MAC) {
			t.Errorf("the re-created pod's guest got %s %s %s, the first %s %s %s",
				vm.Got.IP, vm.Got.IP6, vm.Got.MAC, first.Got.IP, first.Got.IP6, first.Got.MAC)
		}
		reach(ctx, t, node1, p)
		reach6(ctx, t, node1, p)
		tearDown(ctx, t, c, baseline, vm)
		first = vm
	}
}
