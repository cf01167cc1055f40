package integration

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/tapbridge/tapbridge-cni/internal/frame"
	"github.com/tapbridge/tapbridge-cni/internal/state"
	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// servedConf is a network the agent serves, with everything DHCPv4 can
// carry: a gateway, a route, DNS from a resolv.conf, an MTU.
func (f *fixture) servedConf() []byte {
	f.t.Helper()
	resolv := filepath.Join(f.dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 10.77.0.53\ndomain vm.example\nsearch vm.example example\n"), 0o644); err != nil {
		f.t.Fatal(err)
	}
	return f.conf("1.1.0",
		set("dhcp", map[string]any{"enabled": true, "leaseTime": "2m"}),
		set("mtu", 1400),
		set("ipam.ranges", [][]map[string]any{{{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.10", "rangeEnd": "10.77.0.200", "gateway": "10.77.0.1"}}}),
		set("ipam.routes", []map[string]any{{"dst": "192.168.50.0/24", "gw": "10.77.0.9"}}),
		set("ipam.resolvConf", resolv),
	)
}

// TestAgentDHCPv4 runs the agent as the DaemonSet would and busybox udhcpc
// as the guest, through the TAP: the guest gets exactly its IPAM address
// and options, nothing reaches the L2, a renewal is answered by a
// restarted agent after a SIGKILL, a foreign chaddr is refused and
// counted, DEL stops the serving, and the node is left as it was.
func TestAgentDHCPv4(t *testing.T) {
	f := newFixture(t)
	conf := f.servedConf()
	agent := f.startAgent()
	if running, err := state.NewReader(f.stateDir()).AgentRunning(); err != nil || !running {
		t.Fatalf("agent lock not held while the agent runs: %v %v", running, err)
	}
	before := f.snapshot()

	a := harness.Attachment{CID: "agent-" + f.node.ID, IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: f.pod()}
	vm := f.attachVM(conf, a)
	added := time.Now()
	key := a.Names().Key
	served := agent.waitLog(t, "serving", key, 10*time.Second)
	f.logLatency(key, added, served.Time)
	if got := f.waitMetric("tapbridge_agent_attachments_served", func(v float64) bool { return v == 1 }, 5*time.Second); got != 1 {
		t.Fatalf("attachments served %v", got)
	}

	peer := captureOn(t, f.node.Peer, "p0")
	g := f.guestHost(vm)
	client := f.startUdhcpc(g)
	bound := client.wait(t, "bound", 1, 30*time.Second)
	want := fmt.Sprintf("bound ip=%s mask=24 subnet=255.255.255.0 router=10.77.0.1 dns=10.77.0.53 domain=vm.example search=vm.example example mtu=1400 "+
		"staticroutes=192.168.50.0/24 10.77.0.9 0.0.0.0/0 10.77.0.1 lease=120 serverid=10.77.0.250", vm.ip)
	if bound != want {
		t.Errorf("udhcpc got\n  %s\nwant\n  %s", bound, want)
	}
	t.Logf("udhcpc: %s", bound)

	// Nothing of the exchange reached the L2, though the port's table saw it.
	m := f.scrape()
	port := fmt.Sprintf(`{namespace="",pod="",port=%q}`, a.Names().HostIf)
	if v := metric(m, "tapbridge_port_intercepted_total"+port); v < 2 {
		t.Errorf("intercepted %v frames, want the DISCOVER and the REQUEST at least", v)
	}
	for _, s := range []string{`tapbridge_agent_replies_total{protocol="dhcp4",type="offer"}`, `tapbridge_agent_replies_total{protocol="dhcp4",type="ack"}`} {
		if v := metric(m, s); v < 1 {
			t.Errorf("%s = %v", s, v)
		}
	}
	peer.stop()
	if n := peer.dhcpFrom(vm.mac); n != 0 {
		t.Errorf("a DHCP server on the L2 (the peer) saw %d of the guest's requests", n)
	}

	// SIGKILL, restart, renew: the new agent answers from the records.
	if _, err := agent.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	agent = f.startAgent()
	agent.waitLog(t, "serving", key, 10*time.Second)
	client.signal(t, syscall.SIGUSR1)
	renew := client.wait(t, "renew", 1, 20*time.Second)
	if renew != "renew"+strings.TrimPrefix(want, "bound") {
		t.Errorf("renewal after the restart: %s", renew)
	}
	t.Logf("udhcpc: %s", renew)
	f.waitMetric(`tapbridge_agent_replies_total{protocol="dhcp4",type="ack"}`, func(v float64) bool { return v >= 1 }, 5*time.Second)

	f.refusesForeign(g, vm)

	// DEL: the agent lets the port go.
	client.signal(t, syscall.SIGKILL)
	g.stop()
	f.must(f.del(conf, a))
	agent.waitLog(t, "stopped serving", key, 5*time.Second)
	f.waitMetric("tapbridge_agent_attachments_served", func(v float64) bool { return v == 0 }, 5*time.Second)

	if err := agent.proc.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if rc, err := agent.proc.Wait(10 * time.Second); rc != 0 || err != nil {
		t.Fatalf("agent exit on SIGTERM: rc %d, %v", rc, err)
	}
	f.expectClean(before)
}

// refusesForeign sends, from the guest's eth0, a DISCOVER for another
// chaddr and one from another Ethernet source: both refused, counted by
// reason, and answered by nothing.
func (f *fixture) refusesForeign(g *guestHost, vm *guestVM) {
	f.t.Helper()
	other := net.HardwareAddr{0x02, 0xde, 0xad, 0xbe, 0xef, 0x01}
	offers := metric(f.scrape(), `tapbridge_agent_replies_total{protocol="dhcp4",type="offer"}`)
	disc, err := dhcpv4.NewDiscovery(other)
	if err != nil {
		f.t.Fatal(err)
	}
	h := frame.Header{Src: vm.mac, Dst: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, IPSrc: netip.MustParseAddr("0.0.0.0"), IPDst: netip.MustParseAddr("255.255.255.255")}
	in := injectOn(f.t, g.ns, "eth0")
	if err := in.send(frame.UDP4(h, 68, 67, disc.ToBytes())); err != nil {
		f.t.Fatal(err)
	}
	f.waitMetric(`tapbridge_agent_refusals_total{protocol="dhcp4",reason="foreign-chaddr"}`, func(v float64) bool { return v == 1 }, 5*time.Second)

	own, err := dhcpv4.NewDiscovery(vm.mac)
	if err != nil {
		f.t.Fatal(err)
	}
	h.Src = other
	if err := in.send(frame.UDP4(h, 68, 67, own.ToBytes())); err != nil {
		f.t.Fatal(err)
	}
	f.waitMetric(`tapbridge_agent_refusals_total{protocol="dhcp4",reason="foreign-mac"}`, func(v float64) bool { return v == 1 }, 5*time.Second)
	if now := metric(f.scrape(), `tapbridge_agent_replies_total{protocol="dhcp4",type="offer"}`); now != offers {
		f.t.Errorf("offers went from %v to %v: a foreign request was answered", offers, now)
	}
}

// logLatency reports how soon the agent served the new attachment: from
// its record's mtime (staged just before the rename that publishes it,
// so an upper bound) and from ADD's return (a lower bound).
func (f *fixture) logLatency(key string, added, served time.Time) {
	f.t.Helper()
	fi, err := os.Stat(state.NewReader(f.stateDir()).RecordPath(key))
	if err != nil {
		f.t.Fatal(err)
	}
	fromRecord := served.Sub(fi.ModTime())
	f.t.Logf("latency: new attachment served %.1f ms after its record was written, %.1f ms after ADD returned (negative: before)",
		ms(fromRecord), ms(served.Sub(added)))
	// 100 ms is the goal; the margin is for this shared, loaded machine.
	if fromRecord > 500*time.Millisecond {
		f.t.Errorf("served %s after the record was written: the issue asks for 100 ms", fromRecord)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// TestAgentSecondInstance: a second agent on the same dataDir fails at
// start, saying why, and leaves the first one serving.
func TestAgentSecondInstance(t *testing.T) {
	f := newFixture(t)
	first := f.startAgent()
	var out lockedBuffer
	var second *harness.Proc
	err := f.node.Host.Do(func() (err error) {
		second, err = harness.Start(&out, agentBin, "-data-dir", f.stateDir(), "-metrics-addr", "")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := second.Wait(10 * time.Second)
	if err != nil || rc != 1 || !strings.Contains(out.String(), "another tapbridge-agent serves this state directory") {
		t.Errorf("second agent: rc %d, %v, output %s", rc, err, out.String())
	}
	if first.proc.Cmd.ProcessState != nil {
		t.Fatal("the first agent exited")
	}
	if running, err := state.NewReader(f.stateDir()).AgentRunning(); err != nil || !running {
		t.Errorf("agent lock after the second start: %v %v", running, err)
	}
}

// TestAgentFlood: one guest floods its port with DISCOVERs; the agent
// answers it no more than its port's budget (a burst of 20, then 5 a
// second), counts every other one as rate-limited or, when the port's
// socket queue overflowed before the agent could read it, as dropped, and
// a second guest on the same node is still answered at once.
func TestAgentFlood(t *testing.T) {
	f := newFixture(t)
	conf := f.servedConf()
	f.startAgent()
	vms := f.floodVMs(conf, 2)
	flooder, other := vms[0], vms[1]

	const n = 300
	start := time.Now()
	err := onOneCPU(func() error { return flooder.flood(t, n) })
	if err != nil {
		t.Fatal(err)
	}
	c := f.waitAccounted(flooder, n, 10*time.Second)
	elapsed := time.Since(start)
	budget := 20 + 5*elapsed.Seconds() + 1
	t.Logf("%d DISCOVERs from one guest in %s: %v answered (budget %.0f), %v refused as rate-limited, %v dropped by the kernel (the port's queue full)",
		n, elapsed.Round(time.Millisecond), c.answered, budget, c.refused, c.dropped)
	if c.answered > budget || c.sum() != n {
		t.Errorf("flood: %v answered, %v refused, %v dropped of %d; want at most %.0f answered and every frame accounted for",
			c.answered, c.refused, c.dropped, n, budget)
	}

	// The other guest is served as if nothing happened.
	if err := other.write(discoverFrom(t, other)); err != nil {
		t.Fatal(err)
	}
	if !offerArrives(t, other, 5*time.Second) {
		t.Fatal("the second guest got no OFFER while the first flooded its own port")
	}
}

// TestAgentDroppedFrames: while the agent is stopped (SIGSTOP) a guest
// writes more DISCOVERs than its port's socket can queue; the kernel
// drops the rest, and once the agent runs again it reports them, so that
// answered + refused + dropped is every frame sent.
func TestAgentDroppedFrames(t *testing.T) {
	f := newFixture(t)
	conf := f.servedConf()
	agent := f.startAgent()
	vm := f.floodVMs(conf, 1)[0]
	if v := metric(f.scrape(), droppedSeries(vm)); v != 0 {
		t.Fatalf("%s = %v before any frame, want 0", droppedSeries(vm), v)
	}

	n := moreThanQueued(t)
	pid := agent.proc.Cmd.Process
	if err := pid.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// A failure while it is stopped must not leave it stopped (its
	// cleanup's SIGTERM would wait for nothing).
	t.Cleanup(func() { _ = pid.Signal(syscall.SIGCONT) })
	err := vm.flood(t, n)
	if cerr := pid.Signal(syscall.SIGCONT); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	c := f.waitAccounted(vm, n, 10*time.Second)
	t.Logf("%d DISCOVERs written while the agent was stopped: %v answered, %v refused as rate-limited, %v dropped by the kernel (the agent read %v)",
		n, c.answered, c.refused, c.dropped, c.answered+c.refused)
	if c.dropped == 0 || c.sum() != float64(n) {
		t.Errorf("%v answered, %v refused, %v dropped of %d; want drops, and every frame accounted for", c.answered, c.refused, c.dropped, n)
	}
	// The kernel's own count of the socket's drops (sock_diag's, which
	// PACKET_STATISTICS does not reset) agrees; and reading the count
	// resets it, so a later scrape must not lose or count twice what an
	// earlier one read.
	sock := f.portSocket(vm)
	if kd := f.kernelDrops(sock); kd != c.dropped {
		t.Errorf("the agent reports %v dropped frames, the kernel counted %v", c.dropped, kd)
	}
	if again := metric(f.scrape(), droppedSeries(vm)); again != c.dropped {
		t.Errorf("dropped frames went from %v to %v with nothing sent", c.dropped, again)
	}

	// Drops no scrape has read yet are read when the port closes: flood
	// the stopped agent again and DEL (its port's device, and the frames
	// still on the way, go); the port's last word has every drop.
	if err := pid.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	err = vm.flood(t, n)
	f.must(f.del(conf, vm.att))
	final := f.kernelDrops(sock)
	if cerr := pid.Signal(syscall.SIGCONT); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	last := agent.waitLog(t, "stopped serving", vm.att.Names().Key, 10*time.Second)
	t.Logf("second flood: the port closed having counted %v dropped frames, the kernel %v", last.DroppedFrames, final)
	if last.DroppedFrames != final || final <= c.dropped {
		t.Errorf("the port closed with %v dropped frames, the kernel counted %v (%v before the second flood)", last.DroppedFrames, final, c.dropped)
	}
}

// portSocket is the inode of the agent's socket on vm's port, as ss
// shows it ("ino:N").
func (f *fixture) portSocket(vm *guestVM) string {
	f.t.Helper()
	hostIf := vm.att.Names().HostIf
	for _, s := range f.packetSockets() {
		if strings.Contains(s, "*:"+hostIf+" ") {
			if m := regexp.MustCompile(`ino:(\d+)`).FindStringSubmatch(s); m != nil {
				return m[1]
			}
		}
	}
	f.t.Fatalf("no packet socket on %s", hostIf)
	return ""
}

// kernelDrops is the kernel's count (sk_drops, through sock_diag) of the
// frames the socket with inode ino dropped.
func (f *fixture) kernelDrops(ino string) float64 {
	f.t.Helper()
	for _, s := range f.packetSockets() {
		if strings.Contains(s, "ino:"+ino+" ") {
			if m := regexp.MustCompile(`,d(\d+)\)`).FindStringSubmatch(s); m != nil {
				v, _ := strconv.ParseFloat(m[1], 64)
				return v
			}
		}
	}
	f.t.Fatalf("no packet socket with inode %s", ino)
	return 0
}

// packetSockets are the node's packet sockets as ss shows them, one
// string a socket.
func (f *fixture) packetSockets() []string {
	f.t.Helper()
	var out []byte
	err := f.node.Host.Do(func() (err error) {
		out, err = exec.Command("ss", "-0", "-a", "-m", "-n", "-e", "-H").Output()
		return err
	})
	if err != nil {
		f.t.Fatalf("ss: %v", err)
	}
	return strings.Split(strings.ReplaceAll(string(out), "\n\t", " "), "\n")
}

// moreThanQueued is a number of DISCOVERs a port's socket cannot queue:
// the socket has the kernel's default receive buffer, and each of these
// frames costs it more than 512 bytes (about 1 KiB: 208 fit in the
// default 208 KiB).
func moreThanQueued(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/core/rmem_default")
	if err != nil {
		t.Fatal(err)
	}
	rmem, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("net.core.rmem_default %q: %v", b, err)
	}
	return max(1000, 2*rmem/512)
}

// floodVMs attaches n guests of conf and waits until the agent serves them.
func (f *fixture) floodVMs(conf []byte, n int) []*guestVM {
	f.t.Helper()
	var vms []*guestVM
	for i, pod := range f.pods(n) {
		a := harness.Attachment{CID: fmt.Sprintf("flood%d-%s", i, f.node.ID), IfName: "net1", Network: "vmnet",
			Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pod}
		vms = append(vms, f.attachVM(conf, a))
	}
	f.waitMetric("tapbridge_agent_attachments_served", func(v float64) bool { return v == float64(n) }, 10*time.Second)
	return vms
}

// flood writes n DISCOVERs on the guest's TAP, back to back.
func (vm *guestVM) flood(t *testing.T, n int) error {
	d := discoverFrom(t, vm)
	for i := 0; i < n; i++ {
		if err := vm.write(d); err != nil {
			return err
		}
	}
	return nil
}

// accounted is what became of a flooder's DISCOVERs: answered with an
// OFFER, refused as rate-limited, or dropped by the kernel before the
// agent read them.
type accounted struct{ answered, refused, dropped float64 }

func (c accounted) sum() float64 { return c.answered + c.refused + c.dropped }

// waitAccounted scrapes until n frames are accounted for, or limit
// passes, and returns the last figures, all from one scrape. The counters
// are the node's (only the flooder sends DHCPv4) but the drops are the
// flooder's port's.
func (f *fixture) waitAccounted(vm *guestVM, n int, limit time.Duration) accounted {
	f.t.Helper()
	var c accounted
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		m := f.scrape()
		c = accounted{
			answered: metric(m, `tapbridge_agent_replies_total{protocol="dhcp4",type="offer"}`),
			refused:  metric(m, `tapbridge_agent_refusals_total{protocol="dhcp4",reason="rate-limited"}`),
			dropped:  metric(m, droppedSeries(vm)),
		}
		if c.sum() >= float64(n) {
			break
		}
	}
	return c
}

// droppedSeries is the guest's port's series of dropped frames.
func droppedSeries(vm *guestVM) string {
	return fmt.Sprintf(`tapbridge_agent_dropped_frames_total{namespace="",pod="",port=%q}`, vm.att.Names().HostIf)
}

func discoverFrom(t *testing.T, vm *guestVM) []byte {
	t.Helper()
	d, err := dhcpv4.NewDiscovery(vm.mac)
	if err != nil {
		t.Fatal(err)
	}
	h := frame.Header{Src: vm.mac, Dst: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		IPSrc: netip.MustParseAddr("0.0.0.0"), IPDst: netip.MustParseAddr("255.255.255.255")}
	return frame.UDP4(h, 68, 67, d.ToBytes())
}

// offerArrives reads the guest's TAP until an OFFER of its own address
// comes, or limit passes.
func offerArrives(t *testing.T, vm *guestVM, limit time.Duration) bool {
	t.Helper()
	buf := make([]byte, 65536)
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if err := vm.fd.SetReadDeadline(deadline); err != nil {
			t.Fatal(err)
		}
		n, err := vm.fd.Read(buf)
		if err != nil {
			return false
		}
		p, err := frame.Parse(buf[min(n, guest.VnetHdrLen):n])
		if err != nil || p.Proto != frame.ProtoUDP || p.DstPort != 68 {
			continue
		}
		m, err := dhcpv4.FromBytes(p.Payload)
		if err == nil && m.MessageType() == dhcpv4.MessageTypeOffer && m.YourIPAddr.Equal(vm.ip) {
			return true
		}
	}
	return false
}
