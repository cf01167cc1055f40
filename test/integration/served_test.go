package integration

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tapbridge/tapbridge-cni/internal/spoof"
	"github.com/tapbridge/tapbridge-cni/internal/state"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// A network with "dhcp" on: its records say so (the node agent serves
// what they list), its ports keep the guest's DHCP, DHCPv6 and router
// solicitations off the L2 whether spoofCheck is on or off, CHECK sees
// those rules, STATUS answers 50 until an agent holds the state
// directory's lock, and DEL leaves nothing. A network without it lets the
// same requests through, so a DHCP server on the L2 still answers.
func TestServedNetwork(t *testing.T) {
	for _, c := range []struct {
		served, check bool
	}{{true, true}, {true, false}, {false, true}} {
		t.Run(fmt.Sprintf("served=%v/spoofCheck=%v", c.served, c.check), func(t *testing.T) {
			f := newFixture(t)
			pod := f.pods(1)[0]
			mods := []func(map[string]any){set("spoofCheck", c.check)}
			if c.served {
				mods = append(mods, set("dhcp", map[string]any{"enabled": true, "leaseTime": "10m"}))
			}
			conf := f.conf("1.1.0", mods...)
			before := f.snapshot()
			a := harness.Attachment{CID: "served-" + f.node.ID, IfName: "pod5e7e7ed", Network: "vmnet",
				Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pod}
			vm := f.attachVM(conf, a)

			rec, err := state.NewReader(f.stateDir()).Record(a.Names().Key)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case c.served && (rec.DHCP == nil || rec.DHCP.LeaseTime != 600):
				t.Errorf("record's dhcp = %+v, want leaseTime 600", rec.DHCP)
			case !c.served && rec.DHCP != nil:
				t.Errorf("record of an unserved network has dhcp %+v", rec.DHCP)
			}
			if err := succeeded(f.check(conf, vm.res, a)); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if c.served && c.check {
				checkSeesMissingIntercept(t, f, conf, vm, a)
			}
			checkRequestsLeak(t, f, vm, !c.served)
			checkAgentStatus(t, f, conf, c.served)

			vm.fd.Close()
			f.must(f.del(conf, a))
			f.expectClean(before)
		})
	}
}

// checkRequestsLeak sends the guest's requests from the TAP and counts
// what reaches a neighbour on the bridge.
func checkRequestsLeak(t *testing.T, f *fixture, vm *guestVM, leak bool) {
	t.Helper()
	allServers6, allServersMAC := net.ParseIP("ff02::1:2"), net.HardwareAddr{0x33, 0x33, 0, 1, 0, 2}
	ll := harness.LinkLocal(vm.mac)
	requests := map[string]func(m string) []byte{
		"DHCP discover": func(m string) []byte {
			return harness.UDP4(vm.mac, harness.Broadcast, net.IPv4zero.To4(), net.IPv4bcast.To4(), 68, 67, []byte(m))
		},
		"DHCP renewal": func(m string) []byte {
			return harness.UDP4(vm.mac, harness.Broadcast, vm.ip, net.IPv4(10, 77, 0, 250).To4(), 68, 67, []byte(m))
		},
		"DHCPv6 solicit": func(m string) []byte {
			return harness.UDP6(vm.mac, allServersMAC, ll, allServers6, 546, 547, []byte(m))
		},
	}
	capture := captureOn(t, f.node.Peer, "p0")
	end := "tbserved-end|" + f.node.ID
	sendEnd := func() error {
		return vm.write(udp4(vm.mac, harness.Broadcast, vm.ip, net.IPv4(10, 77, 0, 99).To4(), []byte(end)))
	}
	err := onOneCPU(func() error {
		for name, frame := range requests {
			if err := vm.write(frame("tbserved|" + name + "|" + f.node.ID)); err != nil {
				return err
			}
		}
		return sendEnd()
	})
	if err != nil {
		t.Fatal(err)
	}
	f.waitForResending(30*time.Second, "the end marker at the peer", func() bool { return capture.count(end) >= 1 }, sendEnd)
	capture.stop()
	for name := range requests {
		got := capture.count("tbserved|" + name + "|")
		if leak && got != 1 || !leak && got != 0 {
			t.Errorf("%s: %d copies reached the L2, want leak=%v", name, got, leak)
		}
	}
}

// checkAgentStatus: a served network's STATUS is 50, naming the agent,
// while no agent holds the state directory's lock, and 0 while one does;
// an unserved network's does not care.
func checkAgentStatus(t *testing.T, f *fixture, conf []byte, served bool) {
	t.Helper()
	out := f.exec(harness.Call{Command: "STATUS", Stdin: conf})
	switch {
	case served && (out.RC == 0 || out.Err.Code != 50 || !strings.Contains(out.Err.Msg, "tapbridge-agent")):
		t.Errorf("STATUS of a served network without an agent: rc %d %s, want 50 naming tapbridge-agent", out.RC, out.Stdout)
	case !served && out.RC != 0:
		t.Errorf("STATUS of an unserved network without an agent: rc %d %s", out.RC, out.Stdout)
	}
	// Holding the lock is exactly what the running agent does.
	lock, err := state.LockAgent(f.stateDir())
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	if out := f.exec(harness.Call{Command: "STATUS", Stdin: conf}); out.RC != 0 {
		t.Errorf("STATUS with an agent: rc %d %s", out.RC, out.Stdout)
	}
}

// checkSeesMissingIntercept: a served port whose table lost its intercept
// rules (rewritten as an unserved port's) fails CHECK; putting them back
// makes it pass again.
func checkSeesMissingIntercept(t *testing.T, f *fixture, conf []byte, vm *guestVM, a harness.Attachment) {
	t.Helper()
	port := spoof.Port{Name: a.Names().HostIf, MAC: vm.mac, IPs: []netip.Addr{netip.AddrFrom4([4]byte(vm.ip))}}
	f.host(func() error { return spoof.Ensure(port) })
	out := f.exec(harness.Call{Command: "CHECK", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Stdin: f.withPrev(conf, vm.res)})
	if out.RC == 0 || !strings.Contains(out.Err.Msg, "rules") {
		t.Errorf("CHECK with the intercept rules gone: rc %d %s, want an error about the port's rules", out.RC, out.Stdout)
	}
	port.Intercept = true
	f.host(func() error { return spoof.Ensure(port) })
	f.must(f.check(conf, vm.res, a))
}
