package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	goruntime "runtime"
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
	res []byte // ADD's result, for a CHECK
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
	vm := &guestVM{att: a, tap: res.Interfaces[1].Name, res: out.Stdout}
	vm.mac, _ = net.ParseMAC(res.Interfaces[2].Mac)
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

// write writes one frame as the guest: a zeroed virtio_net_hdr, then the
// frame. Safe from any goroutine.
func (vm *guestVM) write(frame []byte) error {
	if _, err := vm.fd.Write(append(make([]byte, guest.VnetHdrLen), frame...)); err != nil {
		return fmt.Errorf("write to TAP %s: %w", vm.tap, err)
	}
	return nil
}

// receivedUntil reads the TAP until a frame containing end arrives and
// returns the frames before it that contain marker. resend sends the end
// marker again, on the CPU the other frames went through, each second it
// has not come: one frame can be dropped on a loaded machine, and any copy
// sent after the other frames proves the same.
func (vm *guestVM) receivedUntil(t *testing.T, marker, end string, limit time.Duration, resend func() error) [][]byte {
	t.Helper()
	var out [][]byte
	buf := make([]byte, 65536)
	deadline := time.Now().Add(limit)
	for {
		next := time.Now().Add(time.Second)
		if next.After(deadline) {
			next = deadline
		}
		if err := vm.fd.SetReadDeadline(next); err != nil {
			t.Fatal(err)
		}
		n, err := vm.fd.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(deadline) {
			if err := onOneCPU(resend); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("read TAP %s: %v (the end marker %q never came)", vm.tap, err, end)
		}
		frame := buf[min(n, guest.VnetHdrLen):n]
		switch {
		case bytes.Contains(frame, []byte(end)):
			return out
		case bytes.Contains(frame, []byte(marker)):
			out = append(out, append([]byte(nil), frame...))
		}
	}
}

// onOneCPU runs fn on a thread pinned to one CPU. Every frame fn writes
// to a TAP or a packet socket then goes through the same CPU's backlog,
// in order, so a frame that arrives proves that every frame written
// before it has been delivered or dropped: the tests wait for a last
// marker frame instead of sleeping.
func onOneCPU(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the pinned thread ends with this goroutine.
		goruntime.LockOSThread()
		var all, one unix.CPUSet
		if err := unix.SchedGetaffinity(0, &all); err != nil {
			errc <- fmt.Errorf("get CPU affinity: %w", err)
			return
		}
		for cpu := 0; cpu < 1024 && one.Count() == 0; cpu++ {
			if all.IsSet(cpu) {
				one.Set(cpu)
			}
		}
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			errc <- fmt.Errorf("pin to one CPU: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// injector sends raw frames out of an interface of a netns (AF_PACKET).
type injector struct {
	fd  int
	mac net.HardwareAddr // the interface's own
}

func injectOn(t *testing.T, n harness.Netns, ifname string) *injector {
	t.Helper()
	in := &injector{}
	err := n.Do(func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		in.mac = l.Attrs().HardwareAddr
		if in.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		return unix.Bind(in.fd, &unix.SockaddrLinklayer{Ifindex: l.Attrs().Index})
	})
	if err != nil {
		t.Fatalf("injector on %s in %s: %v", ifname, n.Name, err)
	}
	t.Cleanup(func() { unix.Close(in.fd) })
	return in
}

// send writes one frame; safe from any goroutine.
func (in *injector) send(frame []byte) error {
	if _, err := unix.Write(in.fd, frame); err != nil {
		return fmt.Errorf("inject frame: %w", err)
	}
	return nil
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
