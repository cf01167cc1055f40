package integration

import (
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

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
			end := "tbspoof-end|" + f.node.ID
			sendEnd := func() error { return vm.write(classes[0].frame(vm, end)) }
			err := onOneCPU(func() error {
				for i := 0; i < each; i++ {
					for _, c := range classes {
						if err := vm.write(c.frame(vm, fmt.Sprintf("tbspoof|%s|%d|%s", c.name, i, f.node.ID))); err != nil {
							return err
						}
						tried++
					}
				}
				// An honest frame, last, on the same path and CPU: once the
				// peer has it, every frame before it was delivered or dropped.
				return sendEnd()
			})
			if err != nil {
				t.Fatal(err)
			}
			f.waitForResending(30*time.Second, "the end marker at the peer", func() bool { return capture.count(end) >= 1 }, sendEnd)
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

// waitForResending is waitFor for an end marker: each second cond does
// not hold, resend sends the marker again from the CPU the frames before
// it went through (see receivedUntil).
func (f *fixture) waitForResending(limit time.Duration, what string, cond func() bool, resend func() error) {
	f.t.Helper()
	for deadline, next := time.Now().Add(limit), time.Now().Add(time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			f.t.Fatalf("no %s after %s", what, limit)
		}
		if time.Now().After(next) {
			if err := onOneCPU(resend); err != nil {
				f.t.Fatal(err)
			}
			next = time.Now().Add(time.Second)
		}
	}
}

// waitFor polls cond until it holds; limit only bounds the wait for
// something that must happen, and the test fails when it passes.
func (f *fixture) waitFor(limit time.Duration, what string, cond func() bool) {
	f.t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			f.t.Fatalf("no %s after %s", what, limit)
		}
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
			inject := injectOn(t, f.node.Peer, "p0")
			peer := net.IPv4(10, 77, 0, 99).To4()
			marker := "tbiso|" + f.node.ID + "|"
			end := "tbiso-end|" + f.node.ID
			sendEnd := func() error { return inject.send(udp4(inject.mac, harness.Broadcast, peer, vms[1].ip, []byte(end))) }
			err = onOneCPU(func() error {
				for i := 0; i < 5; i++ {
					for _, w := range []struct {
						vm    *guestVM
						frame []byte
					}{
						{vms[0], udp4(vms[0].mac, vms[1].mac, vms[0].ip, vms[1].ip, []byte(fmt.Sprintf("%sunicast|%d", marker, i)))},
						{vms[0], udp4(vms[0].mac, harness.Broadcast, vms[0].ip, peer, []byte(fmt.Sprintf("%sbroadcast|%d", marker, i)))},
						{vms[1], udp4(vms[1].mac, harness.Broadcast, vms[1].ip, peer, []byte(fmt.Sprintf("%sfrom-vm1|%d", marker, i)))},
					} {
						if err := w.vm.write(w.frame); err != nil {
							return err
						}
					}
				}
				// Last, from the same CPU, a frame from the peer's port
				// (never isolated) reaches VM 1 either way: once VM 1 has
				// it, VM 0's frames have been delivered or dropped.
				return sendEnd()
			})
			if err != nil {
				t.Fatal(err)
			}
			atVM1 := vms[1].receivedUntil(t, marker, end, 30*time.Second, sendEnd)
			f.waitFor(30*time.Second, "last broadcast of VM 1 at the peer", func() bool { return capture.count(marker+"from-vm1|4") == 1 })
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
