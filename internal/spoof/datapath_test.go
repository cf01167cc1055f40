package spoof

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// topology is H (node, bridge br0 with 192.0.2.1/24), V (the VM, v0 joined
// to port tb… of br0) and P (a peer, p0 joined to port hp0 of br0).
type topology struct {
	h        ns.NetNS
	port     string           // tb…, the VM's port in H
	guestMAC net.HardwareAddr // v0's MAC
	brMAC    net.HardwareAddr
	vm       *packetSocket // writes frames on v0 in V
	peer     *packetSocket // captures on p0 in P
	host     *packetSocket // captures on br0 in H
}

func newTopology(t *testing.T) *topology {
	tag := randHex(t, 4)
	h, v, p := newNS(t, tag, "host"), newNS(t, tag, "vm"), newNS(t, tag, "peer")
	top := &topology{h: h, port: "tb" + randHex(t, 6), brMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
	in(t, h, func() error { return buildHost(top.port, top.brMAC, v, p) })
	in(t, v, func() error {
		var err error
		top.guestMAC, top.vm, err = bringUp("v0", openSender)
		return err
	})
	in(t, p, func() error {
		var err error
		_, top.peer, err = bringUp("p0", openCapture)
		return err
	})
	in(t, h, func() error {
		if err := waitOperUp(top.port, "hp0"); err != nil {
			return err
		}
		var err error
		top.host, err = openCapture("br0")
		return err
	})
	t.Cleanup(func() { top.vm.Close(); top.peer.Close(); top.host.Close() })
	return top
}

// buildHost creates br0 and the two veth pairs, with the far ends in v and p.
func buildHost(port string, brMAC net.HardwareAddr, v, p ns.NetNS) error {
	off := false
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", HardwareAddr: brMAC},
		MulticastSnooping: &off}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge br0: %w", err)
	}
	addr, err := netlink.ParseAddr(host4.String() + "/24")
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(br, addr); err != nil {
		return fmt.Errorf("add %s to br0: %w", addr, err)
	}
	for _, pair := range []struct {
		host, far string
		farNS     ns.NetNS
	}{{port, "v0", v}, {"hp0", "p0", p}} {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: pair.host},
			PeerName: pair.far, PeerNamespace: netlink.NsFd(int(pair.farNS.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth %s: %w", pair.host, err)
		}
		if err := netlink.LinkSetMaster(veth, br); err != nil {
			return fmt.Errorf("enslave %s to br0: %w", pair.host, err)
		}
		if err := netlink.LinkSetUp(veth); err != nil {
			return fmt.Errorf("set %s up: %w", pair.host, err)
		}
	}
	return netlink.LinkSetUp(br)
}

// bringUp sets ifname up with IPv6 off, so the namespace's own kernel sends
// nothing that could blur the drop counters, and opens a packet socket on it.
func bringUp(ifname string, open func(string) (*packetSocket, error)) (net.HardwareAddr, *packetSocket, error) {
	sysctl := "/proc/sys/net/ipv6/conf/" + ifname + "/disable_ipv6"
	if err := os.WriteFile(sysctl, []byte("1"), 0o644); err != nil {
		return nil, nil, fmt.Errorf("disable IPv6 on %s: %w", ifname, err)
	}
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, nil, fmt.Errorf("find %s: %w", ifname, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, nil, fmt.Errorf("set %s up: %w", ifname, err)
	}
	s, err := open(ifname)
	return link.Attrs().HardwareAddr, s, err
}

func waitOperUp(names ...string) error {
	deadline := time.Now().Add(5 * time.Second)
	for _, name := range names {
		for {
			link, err := netlink.LinkByName(name)
			if err == nil && link.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not up after 5s (%v)", name, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// delivery records where the copies of one probe arrived: the broadcast copy
// at the peer and at the host, the copy unicast to br0's MAC at the host.
type delivery struct {
	probe                       probe
	peerBcast, hostBcast, hostU bool
}

func (d delivery) arrivedAll() bool  { return d.peerBcast && d.hostBcast && d.hostU }
func (d delivery) arrivedNone() bool { return !d.peerBcast && !d.hostBcast && !d.hostU }

// exchange sends each probe from the VM twice, to broadcast and to br0's
// MAC, then an honest end frame the same two ways, and reports which copies
// the captures in P and H saw before the end frame's: frames sent from one
// CPU arrive in the order sent, so once the end frame is in, every probe
// sent before it has arrived or been dropped.
func (top *topology) exchange(t *testing.T, phase string, probes []probe) []delivery {
	t.Helper()
	for _, s := range []*packetSocket{top.peer, top.host} {
		if _, err := s.drain(); err != nil { // forget earlier traffic
			t.Fatal(err)
		}
	}
	marker := func(kind string, i int) []byte { return []byte(fmt.Sprintf("@@%s/%s/%02d@@", phase, kind, i)) }
	var frames [][]byte
	for i, p := range append(probes, top.endProbe()) {
		frames = append(frames, p.build(broadcastMAC, marker("b", i)), p.build(top.brMAC, marker("u", i)))
	}
	if err := sendInOrder(top.vm, frames); err != nil {
		t.Fatalf("%s: %v", phase, err)
	}
	// The peer gets the broadcast copies only; the host's last frame is the
	// end frame's unicast copy.
	end := len(probes)
	atPeer := mustReadUntil(t, top.peer, marker("b", end))
	atHost := mustReadUntil(t, top.host, marker("u", end))
	out := make([]delivery, len(probes))
	for i, p := range probes {
		out[i] = delivery{probe: p, peerBcast: seen(atPeer, marker("b", i)),
			hostBcast: seen(atHost, marker("b", i)), hostU: seen(atHost, marker("u", i))}
	}
	return out
}

// endProbe is a frame every phase lets through: IPv4 UDP from the guest's
// MAC and IPv4 address.
func (top *topology) endProbe() probe {
	return probe{name: "end of exchange", honest: true, build: func(d net.HardwareAddr, m []byte) []byte {
		return ether(d, top.guestMAC, unix.ETH_P_IP, ipv4(guest4, host4, unix.IPPROTO_UDP, udp4(40000, 9, m)))
	}}
}

// sendInOrder sends frames from a thread pinned to one CPU. A veth hands a
// frame to the receiving side through the sending CPU's backlog queue, and
// the bridge forwards it from there the same way, so frames sent from one
// CPU are delivered, or dropped by the port's chain, in the order sent.
func sendInOrder(s *packetSocket, frames [][]byte) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the pinned thread is discarded with the goroutine.
		runtime.LockOSThread()
		errc <- pinAndSend(s, frames)
	}()
	return <-errc
}

func pinAndSend(s *packetSocket, frames [][]byte) error {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return fmt.Errorf("get CPU affinity: %w", err)
	}
	cpu := 0
	for !set.IsSet(cpu) {
		cpu++
	}
	set.Zero()
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	for _, f := range frames {
		if err := s.send(f); err != nil {
			return err
		}
	}
	return nil
}

// mustReadUntil returns the frames s receives up to and including the one
// carrying marker.
func mustReadUntil(t *testing.T, s *packetSocket, marker []byte) [][]byte {
	t.Helper()
	frames, err := s.readUntil(marker, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return frames
}

func seen(frames [][]byte, marker []byte) bool {
	for _, f := range frames {
		if bytes.Contains(f, marker) {
			return true
		}
	}
	return false
}

// dropCount sums the packet counters of a port chain; only drop rules count.
func dropCount(port string) (uint64, error) {
	c, err := nftables.New()
	if err != nil {
		return 0, err
	}
	t := tableOf(port)
	rules, err := c.GetRules(t, chainOf(t, port))
	if err != nil {
		return 0, fmt.Errorf("get rules of %s: %w", port, err)
	}
	var n uint64
	for _, r := range rules {
		for _, e := range r.Exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				n += ctr.Packets
			}
		}
	}
	return n, nil
}

// TestDataPath sends honest and forged frames from a "VM" namespace through
// a bridge port carrying the rules, and checks what reaches a peer on the
// bridge and the node itself.
func TestDataPath(t *testing.T) {
	harness.RequireRoot(t)
	top := newTopology(t)
	all := guestProbes(top.guestMAC)

	// Control: without rules every probe must arrive everywhere, or not
	// seeing a forged frame later would prove nothing.
	expectAll(t, "baseline without rules", top.exchange(t, "baseline", all))

	port := Port{Name: top.port, MAC: top.guestMAC,
		IPs: []netip.Addr{guest4, guest6}}
	in(t, top.h, func() error { return Ensure(port) })
	tried := expectFiltered(t, top, "guest with IPs", all)

	port.IPs = nil
	in(t, top.h, func() error { return Ensure(port) })
	tried += expectFiltered(t, top, "L2-only guest", l2OnlyProbes(top.guestMAC))
	t.Logf("forged frames tried: %d (each forged probe sent to broadcast and to br0's MAC)", tried)

	in(t, top.h, func() error {
		if err := Delete(top.port); err != nil {
			return err
		}
		return wantNoTables()
	})
	expectAll(t, "after Delete", top.exchange(t, "deleted", forgedProbes(top.guestMAC)))
}

func expectAll(t *testing.T, phase string, ds []delivery) {
	t.Helper()
	for _, d := range ds {
		if !d.arrivedAll() {
			t.Fatalf("%s: %q did not arrive everywhere (peer %v, host broadcast %v, host unicast %v)",
				phase, d.probe.name, d.peerBcast, d.hostBcast, d.hostU)
		}
	}
}

// expectFiltered checks that honest probes arrive and forged ones do not,
// and that the drop counters saw each forged copy exactly once. It returns
// the number of forged frames sent.
func expectFiltered(t *testing.T, top *topology, phase string, probes []probe) int {
	t.Helper()
	forged := 0
	for _, d := range top.exchange(t, phase, probes) {
		ok := d.arrivedAll()
		if !d.probe.honest {
			forged += 2
			ok = d.arrivedNone()
		}
		t.Logf("%s: honest=%-5v peer=%-5v host(bcast)=%-5v host(unicast)=%-5v ok=%v  %s",
			phase, d.probe.honest, d.peerBcast, d.hostBcast, d.hostU, ok, d.probe.name)
		if !ok {
			t.Errorf("%s: %q arrived where it should not or missed where it should", phase, d.probe.name)
		}
	}
	var drops uint64
	in(t, top.h, func() error {
		var err error
		drops, err = dropCount(top.port)
		return err
	})
	if drops != uint64(forged) {
		t.Errorf("%s: drop counters say %d packets, want %d (one per forged frame)", phase, drops, forged)
	}
	return forged
}
