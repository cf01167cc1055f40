package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// guestVM is a guest as the tests see it: the TAP fd and the addresses ADD
// gave it.
type guestVM struct {
	att harness.Attachment
	mac net.HardwareAddr
	ip  net.IP
	tap string
	fd  *os.File
}

// attachVM runs ADD for a on conf and opens its TAP as uid/gid 107, the
// way QEMU does.
func (f *fixture) attachVM(conf []byte, a harness.Attachment) *guestVM {
	f.t.Helper()
	out := f.must(f.add(conf, a))
	var res struct {
		Interfaces []struct{ Name, Mac string }
		IPs        []struct{ Address string }
	}
	if err := json.Unmarshal(out.Stdout, &res); err != nil || len(res.Interfaces) != 3 || len(res.IPs) != 1 {
		f.t.Fatalf("ADD result %s: %v", out.Stdout, err)
	}
	vm := &guestVM{att: a, tap: res.Interfaces[2].Name}
	vm.mac, _ = net.ParseMAC(res.Interfaces[1].Mac)
	ip, _, _ := net.ParseCIDR(res.IPs[0].Address)
	vm.ip = ip.To4()
	fds, err := guest.OpenTap(a.Pod.Path(), vm.tap, 1, 107, 107)
	if err != nil {
		f.t.Fatalf("open TAP %s as uid 107: %v", vm.tap, err)
	}
	vm.fd = fds[0]
	f.t.Cleanup(func() { vm.fd.Close() })
	return vm
}

// send writes one frame as the guest: a zeroed virtio_net_hdr, then the frame.
func (vm *guestVM) send(t *testing.T, frame []byte) {
	t.Helper()
	if _, err := vm.fd.Write(append(make([]byte, guest.VnetHdrLen), frame...)); err != nil {
		t.Fatalf("write to TAP %s: %v", vm.tap, err)
	}
}

// received reads the TAP for d and returns the frames that contain marker.
func (vm *guestVM) received(t *testing.T, marker string, d time.Duration) [][]byte {
	t.Helper()
	var out [][]byte
	deadline := time.Now().Add(d)
	buf := make([]byte, 65536)
	for {
		if err := vm.fd.SetReadDeadline(deadline); err != nil {
			t.Fatal(err)
		}
		n, err := vm.fd.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatalf("read TAP %s: %v", vm.tap, err)
		}
		if n > guest.VnetHdrLen && bytes.Contains(buf[guest.VnetHdrLen:n], []byte(marker)) {
			out = append(out, append([]byte(nil), buf[guest.VnetHdrLen:n]...))
		}
	}
}

// packetCapture records the frames a netns interface receives (AF_PACKET).
type packetCapture struct {
	fd     int
	mu     sync.Mutex
	frames [][]byte
	quit   chan struct{} // closed by stop
	done   chan struct{} // closed by the reader once it has closed fd
	once   sync.Once
}

func captureOn(t *testing.T, n harness.Netns, ifname string) *packetCapture {
	t.Helper()
	c := &packetCapture{quit: make(chan struct{}), done: make(chan struct{})}
	proto := int(uint16(unix.ETH_P_ALL)<<8 | uint16(unix.ETH_P_ALL)>>8) // htons
	err := n.Do(func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		if c.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		if err := unix.Bind(c.fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: l.Attrs().Index}); err != nil {
			return err
		}
		return unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50_000})
	})
	if err != nil {
		t.Fatalf("capture on %s in %s: %v", ifname, n.Name, err)
	}
	go func() {
		defer close(c.done)
		defer unix.Close(c.fd) // here, so no Recvfrom ever runs on a reused fd number
		buf := make([]byte, 65536)
		for {
			select {
			case <-c.quit:
				return
			default:
			}
			n, from, err := unix.Recvfrom(c.fd, buf, 0)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue // the 50 ms receive timeout: look at quit again
			}
			if err != nil {
				return
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			c.mu.Lock()
			c.frames = append(c.frames, append([]byte(nil), buf[:n]...))
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.stop() })
	return c
}

// count returns how many received frames contain marker.
func (c *packetCapture) count(marker string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, f := range c.frames {
		if bytes.Contains(f, []byte(marker)) {
			n++
		}
	}
	return n
}

// stop ends the capture; the frames already read stay countable.
func (c *packetCapture) stop() {
	c.once.Do(func() { close(c.quit) })
	<-c.done
}

// The frames use UDP ports 40000 -> 40001; ARP frames carry the marker in
// the Ethernet padding after the ARP payload.
func udp4(srcMAC, dstMAC net.HardwareAddr, src, dst net.IP, payload []byte) []byte {
	return harness.UDP4(srcMAC, dstMAC, src, dst, 40000, 40001, payload)
}

func udp6(srcMAC, dstMAC net.HardwareAddr, src, dst net.IP, payload []byte) []byte {
	return harness.UDP6(srcMAC, dstMAC, src, dst, 40000, 40001, payload)
}

func arpMarked(ethSrc, sha net.HardwareAddr, spa, tpa net.IP, marker string) []byte {
	return append(harness.ARPRequestAs(ethSrc, sha, spa, tpa), marker...)
}

// spoofClass is one kind of frame the guest tries to send.
type spoofClass struct {
	name   string
	honest bool
	frame  func(vm *guestVM, marker string) []byte
}

func spoofClasses() []spoofClass {
	peer := net.IPv4(10, 77, 0, 99).To4()
	forgedMAC := net.HardwareAddr{0x02, 0x66, 0x66, 0x66, 0x66, 0x66}
	forgedIP := net.IPv4(10, 77, 0, 66).To4()
	allNodes, allNodesMAC := net.ParseIP("ff02::1"), net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	return []spoofClass{
		{"IPv4 from the guest", true, func(vm *guestVM, m string) []byte { return udp4(vm.mac, harness.Broadcast, vm.ip, peer, []byte(m)) }},
		{"ARP from the guest", true, func(vm *guestVM, m string) []byte { return arpMarked(vm.mac, vm.mac, vm.ip, peer, m) }},
		{"IPv6 from the guest's link-local", true, func(vm *guestVM, m string) []byte {
			return udp6(vm.mac, allNodesMAC, harness.LinkLocal(vm.mac), allNodes, []byte(m))
		}},
		{"forged source MAC", false, func(vm *guestVM, m string) []byte { return udp4(forgedMAC, harness.Broadcast, vm.ip, peer, []byte(m)) }},
		{"forged IPv4 source", false, func(vm *guestVM, m string) []byte { return udp4(vm.mac, harness.Broadcast, forgedIP, peer, []byte(m)) }},
		{"forged ARP sender IP", false, func(vm *guestVM, m string) []byte { return arpMarked(vm.mac, vm.mac, forgedIP, peer, m) }},
		{"forged ARP sender MAC", false, func(vm *guestVM, m string) []byte { return arpMarked(vm.mac, forgedMAC, vm.ip, peer, m) }},
		{"forged IPv6 source", false, func(vm *guestVM, m string) []byte {
			return udp6(vm.mac, allNodesMAC, net.ParseIP("fd00:77::66"), allNodes, []byte(m))
		}},
		{"forged IPv6 link-local", false, func(vm *guestVM, m string) []byte {
			return udp6(vm.mac, allNodesMAC, net.ParseIP("fe80::66"), allNodes, []byte(m))
		}},
	}
}

// Anti-spoofing with the plugin: after a real ADD the guest writes, on
// its TAP, honest frames and forged ones; a neighbour on the bridge (the
// node's peer netns) receives every honest frame and no forged one. With
// spoofCheck off, the same forged frames arrive: the check is what
// stops them, and the capture would see them.
func TestAntiSpoof(t *testing.T) {
	const each = 5
	for _, check := range []bool{true, false} {
		t.Run(fmt.Sprintf("spoofCheck=%v", check), func(t *testing.T) {
			f := newFixture(t)
			pod := f.pods(1)[0]
			conf := f.conf("1.1.0", set("spoofCheck", check))
			before := f.snapshot()
			a := harness.Attachment{CID: "spoof-" + f.node.ID, IfName: "pod5f00f00", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pod}
			vm := f.attachVM(conf, a)
			capture := captureOn(t, f.node.Peer, "p0")
			classes := spoofClasses()
			tried := 0
			for i := 0; i < each; i++ {
				for _, c := range classes {
					vm.send(t, c.frame(vm, fmt.Sprintf("tbspoof|%s|%d|%s", c.name, i, f.node.ID)))
					tried++
				}
			}
			f.waitFor(2*time.Second, func() bool { return capture.count("tbspoof|IPv4 from the guest|4|") == 1 })
			time.Sleep(200 * time.Millisecond) // let any straggler arrive
			capture.stop()
			for _, c := range classes {
				got := capture.count("tbspoof|" + c.name + "|")
				want := each
				if !c.honest && check {
					want = 0
				}
				if got != want {
					t.Errorf("%s: %d of %d frames reached the peer, want %d", c.name, got, each, want)
				}
			}
			t.Logf("spoofCheck=%v: %d frames tried (%d classes x %d)", check, tried, len(classes), each)
			vm.fd.Close()
			f.must(f.del(conf, a))
			f.expectClean(before)
		})
	}
}

// waitFor polls cond until it holds or d passes.
func (f *fixture) waitFor(d time.Duration, cond func() bool) {
	deadline := time.Now().Add(d)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// portIsolation: the host veths carry the bridge port's isolated flag,
// and two VMs on the node cannot reach each other at L2 (unicast or
// broadcast) while both reach the peer. Without it, they can: the
// control shows the test would see such frames.
func TestPortIsolation(t *testing.T) {
	for _, isolated := range []bool{true, false} {
		t.Run(fmt.Sprintf("portIsolation=%v", isolated), func(t *testing.T) {
			f := newFixture(t)
			pods := f.pods(2)
			conf := f.conf("1.1.0", set("portIsolation", isolated))
			before := f.snapshot()
			var vms []*guestVM
			for i, p := range pods {
				a := harness.Attachment{CID: fmt.Sprintf("iso-%s-%d", f.node.ID, i), IfName: fmt.Sprintf("pod1501a7e%d", i), Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: p}
				vms = append(vms, f.attachVM(conf, a))
			}
			err := f.node.Host.Do(func() error {
				for _, vm := range vms {
					l, err := netlink.LinkByName(vm.att.Names().HostIf)
					if err != nil {
						return err
					}
					pi, err := netlink.LinkGetProtinfo(l)
					if err != nil {
						return err
					}
					if pi.Isolated != isolated {
						return fmt.Errorf("bridge port %s: isolated=%v, want %v", l.Attrs().Name, pi.Isolated, isolated)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			capture := captureOn(t, f.node.Peer, "p0")
			peer := net.IPv4(10, 77, 0, 99).To4()
			marker := "tbiso|" + f.node.ID + "|"
			for i := 0; i < 5; i++ {
				vms[0].send(t, udp4(vms[0].mac, vms[1].mac, vms[0].ip, vms[1].ip, []byte(fmt.Sprintf("%sunicast|%d", marker, i))))
				vms[0].send(t, udp4(vms[0].mac, harness.Broadcast, vms[0].ip, peer, []byte(fmt.Sprintf("%sbroadcast|%d", marker, i))))
				vms[1].send(t, udp4(vms[1].mac, harness.Broadcast, vms[1].ip, peer, []byte(fmt.Sprintf("%sfrom-vm1|%d", marker, i))))
			}
			atVM1 := vms[1].received(t, marker, time.Second)
			f.waitFor(2*time.Second, func() bool { return capture.count(marker+"from-vm1|4") == 1 })
			capture.stop()
			if got, want := capture.count(marker+"broadcast|"), 5; got != want {
				t.Errorf("peer got %d of VM 0's broadcasts, want %d", got, want)
			}
			if got, want := capture.count(marker+"from-vm1|"), 5; got != want {
				t.Errorf("peer got %d of VM 1's broadcasts, want %d", got, want)
			}
			want := 10 // 5 unicast to VM 1 + 5 broadcasts
			if isolated {
				want = 0
			}
			if len(atVM1) != want {
				t.Errorf("VM 1 received %d of VM 0's frames, want %d", len(atVM1), want)
			}
			for _, vm := range vms {
				vm.fd.Close()
				f.must(f.del(conf, vm.att))
			}
			f.expectClean(before)
		})
	}
}

// The TAP is the hypervisor's alone, and the multi-queue flag is a
// contract: uid 108 cannot attach (EPERM); the owner attaching with the
// other IFF_MULTI_QUEUE setting gets EINVAL; with the configured one it
// attaches.
func TestTapAccess(t *testing.T) {
	for _, mq := range []bool{false, true} {
		t.Run(fmt.Sprintf("multiQueue=%v", mq), func(t *testing.T) {
			f := newFixture(t)
			pod := f.pods(1)[0]
			conf := f.conf("1.1.0", set("tap.multiQueue", mq))
			a := harness.Attachment{CID: "tapacc-" + f.node.ID, IfName: "pod7a9acce55", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pod}
			f.must(f.add(conf, a))
			tapName := a.Names().Tap
			right, wrong := 1, 2
			if mq {
				right, wrong = 2, 1
			}
			if fds, err := guest.OpenTap(pod.Path(), tapName, right, 108, 108); !errors.Is(err, unix.EPERM) {
				closeAll(fds)
				t.Errorf("uid 108 attaching to %s: %v, want EPERM", tapName, err)
			}
			if fds, err := guest.OpenTap(pod.Path(), tapName, wrong, 107, 107); !errors.Is(err, unix.EINVAL) {
				closeAll(fds)
				t.Errorf("uid 107 attaching to %s with %d queues: %v, want EINVAL", tapName, wrong, err)
			}
			fds, err := guest.OpenTap(pod.Path(), tapName, right, 107, 107)
			if err != nil {
				t.Errorf("uid 107 attaching to %s with %d queues: %v", tapName, right, err)
			}
			closeAll(fds)
			f.must(f.del(conf, a))
			f.expectLive(nil, []harness.Netns{pod})
		})
	}
}

func closeAll(fds []*os.File) {
	for _, f := range fds {
		f.Close()
	}
}
