package integration

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/tapbridge/tapbridge-cni/internal/frame"
	"github.com/tapbridge/tapbridge-cni/internal/spoof"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// Link-locals that are not the EUI-64 one: an RFC 7217 stable-privacy one
// (NetworkManager's default), a random one (Windows' default), and the
// one a guest moves to.
var (
	stablePrivacyLL = netip.MustParseAddr("fe80::3c1a:9b2e:74d0:15f3")
	randomLL        = netip.MustParseAddr("fe80::a4d1:c3ff:e9b:7702")
	changedLL       = netip.MustParseAddr("fe80::5e2b:71ff:a0c4:9d16")
	allNodes6       = netip.MustParseAddr("ff02::1")
)

// llProbe is one frame a guest writes on its TAP, and whether it must
// reach the L2 (the peer). Every frame goes to the Ethernet broadcast
// address, so that the bridge floods whatever the port lets through and
// the peer's capture tells passed from dropped (a real DAD goes to the
// target's solicited-node group, which nobody on this L2 has joined).
type llProbe struct {
	vm     *guestVM
	name   string
	marker string
	frame  []byte
	pass   bool
}

func eui64Of(vm *guestVM) netip.Addr {
	a, _ := netip.AddrFromSlice(harness.LinkLocal(vm.mac))
	return a
}

// fromLL is a UDP datagram from src to all nodes.
func fromLL(vm *guestVM, src netip.Addr, name string) llProbe {
	m := "tbll|" + name
	return llProbe{vm: vm, name: name, marker: m,
		frame: harness.UDP6(vm.mac, harness.Broadcast, src.AsSlice(), allNodes6.AsSlice(), 40000, 40001, []byte(m))}
}

// advert is an unsolicited neighbour advertisement for target, from src.
func advert(vm *guestVM, src, target netip.Addr, name string) llProbe {
	m := "tbll|" + name
	msg := append(append([]byte{136, 0, 0, 0, 0x20, 0, 0, 0}, target.AsSlice()...), m...)
	h := frame.Header{Src: vm.mac, Dst: harness.Broadcast, IPSrc: src, IPDst: allNodes6}
	return llProbe{vm: vm, name: name, marker: m, frame: frame.ICMPv6(h, 255, msg)}
}

// dadFor is the guest's DAD neighbour solicitation for target, from ::
// to the target's solicited-node group, with hop limit 255. Its marker
// is the 6 bytes of a nonce option (RFC 7527), which Linux guests send.
func dadFor(vm *guestVM, target netip.Addr, nonce string) llProbe {
	if len(nonce) != 6 {
		panic("a nonce has 6 bytes")
	}
	b := target.As16()
	group := netip.AddrFrom16([16]byte{0xff, 0x02, 11: 0x01, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]})
	msg := append(append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, target.AsSlice()...), append([]byte{14, 1}, nonce...)...)
	h := frame.Header{Src: vm.mac, Dst: harness.Broadcast, IPSrc: netip.IPv6Unspecified(), IPDst: group}
	return llProbe{vm: vm, name: "DAD " + nonce + " for " + target.String(), marker: nonce, frame: frame.ICMPv6(h, 255, msg)}
}

func (p llProbe) passes() llProbe { p.pass = true; return p }

// expectLL writes the probes from their guests' TAPs, then an honest end
// frame from the last guest on the same CPU, and checks what reached the
// peer once the end frame has: exactly the probes that must pass, and
// the ports' drop counters grew by one per dropped probe.
func (f *fixture) expectLL(phase string, probes []llProbe) {
	f.t.Helper()
	ports := map[string]bool{}
	for _, p := range probes {
		ports[p.vm.att.Names().HostIf] = true
	}
	before := f.drops(ports)
	peer := captureOn(f.t, f.node.Peer, "p0")
	last := probes[len(probes)-1].vm
	end := fmt.Sprintf("tbll-end|%s|%s", phase, f.node.ID)
	sendEnd := func() error {
		return last.write(udp4(last.mac, harness.Broadcast, last.ip, net.IPv4(10, 77, 0, 99).To4(), []byte(end)))
	}
	err := onOneCPU(func() error {
		for _, p := range probes {
			if err := p.vm.write(p.frame); err != nil {
				return err
			}
		}
		return sendEnd()
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.waitForResending(30*time.Second, "the end marker at the peer", func() bool { return peer.count(end) >= 1 }, sendEnd)
	peer.stop()
	dropped := uint64(0)
	for _, p := range probes {
		got, want := peer.count(p.marker), 0
		if p.pass {
			want = 1
		} else {
			dropped++
		}
		if got != want {
			f.t.Errorf("%s: %s: %d copies reached the L2, want %d", phase, p.name, got, want)
		}
	}
	if grew := f.drops(ports) - before; grew != dropped {
		f.t.Errorf("%s: the ports' drop counters grew by %d, want %d", phase, grew, dropped)
	}
}

// drops sums the spoof drop counters of ports.
func (f *fixture) drops(ports map[string]bool) uint64 {
	f.t.Helper()
	var n uint64
	f.host(func() error {
		for port := range ports {
			c, err := spoof.ReadCounts(port)
			if err != nil {
				return err
			}
			n += c.Dropped
		}
		return nil
	})
	return n
}

// sendDAD writes DAD claims, each from its guest's TAP.
func (f *fixture) sendDAD(claims ...llProbe) {
	f.t.Helper()
	for _, c := range claims {
		if err := c.vm.write(c.frame); err != nil {
			f.t.Fatal(err)
		}
	}
}

const (
	learnedSeries = "tapbridge_agent_linklocals_learned_total"
	heldSeries    = `tapbridge_agent_refusals_total{protocol="linklocal",reason="held"}`
)

func equals(n float64) func(float64) bool { return func(v float64) bool { return v == n } }

// learningPair attaches two guests of conf and waits for the agent to
// read both ports when it should.
func (f *fixture) learningPair(conf []byte) (*guestVM, *guestVM) {
	f.t.Helper()
	var vms []*guestVM
	for i, id := range []string{"a", "b"} {
		a := harness.Attachment{CID: fmt.Sprintf("ll%s-%s", id, f.node.ID), IfName: fmt.Sprintf("pod11ea7e%d", i), Network: "vmnet",
			Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: f.pod()}
		vms = append(vms, f.attachVM(conf, a))
	}
	return vms[0], vms[1]
}

// TestLinkLocalOff: without learnLinkLocal, a guest's stable-privacy and
// random link-locals are dropped and counted, before and after its DAD
// (which is dropped too), and the agent learns nothing: it does not even
// read the ports.
func TestLinkLocalOff(t *testing.T) {
	f := newFixture(t)
	conf := f.conf("1.1.0")
	agent := f.startAgent()
	before := f.snapshot()
	vmA, vmB := f.learningPair(conf)
	f.expectLL("off, before DAD", []llProbe{
		fromLL(vmA, stablePrivacyLL, "A from stable-privacy"),
		fromLL(vmB, randomLL, "B from random"),
		fromLL(vmA, eui64Of(vmA), "A from its EUI-64").passes(),
	})
	f.expectLL("off, DAD", []llProbe{dadFor(vmA, stablePrivacyLL, "dadA01"), dadFor(vmB, randomLL, "dadB01")})
	f.expectLL("off, after DAD", []llProbe{
		fromLL(vmA, stablePrivacyLL, "A from stable-privacy again"),
		advert(vmA, stablePrivacyLL, stablePrivacyLL, "A's NA for stable-privacy"),
		fromLL(vmB, randomLL, "B from random again"),
	})
	m := f.scrape()
	if v := metric(m, learnedSeries); v != 0 {
		t.Errorf("learned %v link-locals with the option off", v)
	}
	if v := metric(m, "tapbridge_agent_attachments_served"); v != 0 {
		t.Errorf("the agent reads %v ports of a network that neither serves nor learns", v)
	}
	for _, vm := range []*guestVM{vmA, vmB} {
		vm.fd.Close()
		f.must(f.del(conf, vm.att))
	}
	stopAgent(t, agent)
	f.expectClean(before)
}

// TestLinkLocalLearning: with learnLinkLocal, a guest's own link-local
// (stable-privacy for A, random for B) is dropped until the guest claims
// it by DAD (the claim itself never reaches the L2), and passes after, as
// a source and an NA target; B claiming or advertising A's learned or
// EUI-64 link-local is dropped and not learned; CHECK passes whatever was
// learned; the agent SIGKILLed and restarted changes nothing (the table
// is the state) and still refuses B; A moving to another link-local
// makes the old one stop passing; DEL takes the learned address with the
// table, after which B may claim it; STATUS needs the agent.
func TestLinkLocalLearning(t *testing.T) {
	f := newFixture(t)
	conf := f.conf("1.1.0", set("learnLinkLocal", true))
	agent := f.startAgent()
	before := f.snapshot()
	vmA, vmB := f.learningPair(conf)
	for _, vm := range []*guestVM{vmA, vmB} {
		agent.waitLog(t, "serving", vm.att.Names().Key, 10*time.Second)
	}
	euiA := eui64Of(vmA)

	f.expectLL("before DAD", []llProbe{
		fromLL(vmA, stablePrivacyLL, "A from stable-privacy"),
		advert(vmA, stablePrivacyLL, stablePrivacyLL, "A's NA for stable-privacy"),
		fromLL(vmB, randomLL, "B from random"),
		fromLL(vmA, euiA, "A from its EUI-64").passes(),
	})
	// The first claims: dropped at the ports, read by the agent first.
	f.expectLL("claims", []llProbe{dadFor(vmA, stablePrivacyLL, "dadA01"), dadFor(vmB, randomLL, "dadB01")})
	f.waitMetric(learnedSeries, equals(2), 5*time.Second)
	f.expectLL("after DAD", []llProbe{
		fromLL(vmA, stablePrivacyLL, "A from stable-privacy, learned").passes(),
		advert(vmA, stablePrivacyLL, stablePrivacyLL, "A's NA for stable-privacy, learned").passes(),
		dadFor(vmA, stablePrivacyLL, "dadA02").passes(), // a retransmission: the capture sees DADs
		fromLL(vmB, randomLL, "B from random, learned").passes(),
		fromLL(vmA, randomLL, "A from B's random"),
	})

	// B goes for A's addresses: refused, and its frames dropped.
	f.sendDAD(dadFor(vmB, stablePrivacyLL, "dadB02"), dadFor(vmB, euiA, "dadB03"))
	f.waitMetric(heldSeries, equals(2), 5*time.Second)
	f.expectLL("B on A's", []llProbe{
		dadFor(vmB, stablePrivacyLL, "dadB04"),
		fromLL(vmB, stablePrivacyLL, "B from A's stable-privacy"),
		advert(vmB, randomLL, stablePrivacyLL, "B's NA for A's stable-privacy"),
		advert(vmB, randomLL, euiA, "B's NA for A's EUI-64"),
		fromLL(vmB, randomLL, "B from random, still").passes(),
	})
	if v := metric(f.scrape(), learnedSeries); v != 2 {
		t.Errorf("learned %v link-locals, want still 2", v)
	}
	for _, vm := range []*guestVM{vmA, vmB} {
		f.must(f.check(conf, vm.res, vm.att))
	}

	// The agent dies hard: the ports keep what they learned, and the new
	// agent knows it.
	if _, err := agent.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	agent = f.startAgent()
	agent.waitLog(t, "serving", vmB.att.Names().Key, 10*time.Second)
	agent.waitLog(t, "serving", vmA.att.Names().Key, 10*time.Second)
	f.expectLL("after the restart", []llProbe{
		fromLL(vmA, stablePrivacyLL, "A from stable-privacy, after the restart").passes(),
		fromLL(vmB, randomLL, "B from random, after the restart").passes(),
	})
	f.sendDAD(dadFor(vmB, stablePrivacyLL, "dadB05"))
	f.waitMetric(heldSeries, equals(1), 5*time.Second)

	// A moves to another link-local: the new one replaces the old.
	f.expectLL("A moves", []llProbe{dadFor(vmA, changedLL, "dadA03")})
	f.waitMetric(learnedSeries, equals(1), 5*time.Second)
	f.expectLL("after A moved", []llProbe{
		fromLL(vmA, changedLL, "A from its new link-local").passes(),
		fromLL(vmA, stablePrivacyLL, "A from its old link-local"),
		advert(vmA, changedLL, stablePrivacyLL, "A's NA for its old link-local"),
	})

	// DEL: the learned address goes with A's table, and is free for B.
	keyA, portA := vmA.att.Names().Key, vmA.att.Names().HostIf
	vmA.fd.Close()
	f.must(f.del(conf, vmA.att))
	agent.waitLog(t, "stopped serving", keyA, 5*time.Second)
	f.host(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tables, err := c.ListTables()
		for _, tb := range tables {
			if strings.HasSuffix(tb.Name, portA) {
				t.Errorf("table %s left after DEL", tb.Name)
			}
		}
		return err
	})
	f.expectLL("B takes A's old address", []llProbe{dadFor(vmB, changedLL, "dadB06")})
	f.waitMetric(learnedSeries, equals(2), 5*time.Second)
	f.expectLL("B moved", []llProbe{
		fromLL(vmB, changedLL, "B from A's old link-local").passes(),
		fromLL(vmB, randomLL, "B from its old random"),
	})

	if out := f.exec(harness.Call{Command: "STATUS", Stdin: conf}); out.RC != 0 {
		t.Errorf("STATUS with the agent: rc %d %s", out.RC, out.Stdout)
	}
	stopAgent(t, agent)
	out := f.exec(harness.Call{Command: "STATUS", Stdin: conf})
	if out.RC == 0 || out.Err.Code != 50 || !strings.Contains(out.Err.Msg, "learnLinkLocal") {
		t.Errorf("STATUS of a learning network without an agent: rc %d %s, want 50 naming learnLinkLocal", out.RC, out.Stdout)
	}
	vmB.fd.Close()
	f.must(f.del(conf, vmB.att))
	f.expectClean(before)
}

func stopAgent(t *testing.T, a *agentProc) {
	t.Helper()
	if err := a.proc.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if rc, err := a.proc.Wait(10 * time.Second); rc != 0 || err != nil {
		t.Fatalf("agent exit on SIGTERM: rc %d, %v", rc, err)
	}
}
