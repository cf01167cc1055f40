package integration

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// agentProc is a tapbridge-agent the test runs in the node's host netns,
// as the DaemonSet runs it on a node.
type agentProc struct {
	proc *harness.Proc
	out  *lockedBuffer
}

// lockedBuffer is the agent's output, read while the agent writes it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

const agentMetrics = "127.0.0.1:9741"

func (f *fixture) startAgent() *agentProc {
	f.t.Helper()
	a := &agentProc{out: &lockedBuffer{}}
	err := f.node.Host.Do(func() (err error) {
		a.proc, err = harness.Start(a.out, agentBin, "-data-dir", f.stateDir(), "-metrics-addr", agentMetrics, "-log-level", "debug")
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		if a.proc.Cmd.ProcessState == nil {
			_, _ = a.proc.Kill()
		}
		if f.t.Failed() {
			f.t.Logf("agent output:\n%s", a.out)
		}
	})
	a.waitLog(f.t, "tapbridge-agent started", "", 10*time.Second)
	return a
}

// logLine is one line of the agent's JSON log.
type logLine struct {
	Time       time.Time `json:"time"`
	Msg        string    `json:"msg"`
	Attachment string    `json:"attachment"`
	// DroppedFrames is a port's count of the kernel's drops, logged when
	// the port stops.
	DroppedFrames float64 `json:"dropped_frames"`
}

// waitLog waits for the first line with msg (and attachment, if given).
func (a *agentProc) waitLog(t *testing.T, msg, attachment string, limit time.Duration) logLine {
	t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(2 * time.Millisecond) {
		for _, l := range strings.Split(a.out.String(), "\n") {
			var ll logLine
			if json.Unmarshal([]byte(l), &ll) == nil && ll.Msg == msg && (attachment == "" || ll.Attachment == attachment) {
				return ll
			}
		}
		if a.proc.Cmd.ProcessState != nil || time.Now().After(deadline) {
			t.Fatalf("the agent did not log %q (attachment %q) within %s", msg, attachment, limit)
		}
	}
}

// scrape reads /metrics from inside the node's netns: the connection is
// made on the netns thread, then used from anywhere.
func (f *fixture) scrape() string {
	f.t.Helper()
	var conn net.Conn
	if err := f.node.Host.Do(func() (err error) { conn, err = net.Dial("tcp", agentMetrics); return err }); err != nil {
		f.t.Fatalf("connect to the agent's metrics: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "GET /metrics HTTP/1.0\r\nHost: agent\r\n\r\n"); err != nil {
		f.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		f.t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		f.t.Fatalf("scrape: %s %v", resp.Status, err)
	}
	return string(body)
}

// metric is the value of one series ("name{labels}" as exposed), -1 when absent.
func metric(text, series string) float64 {
	for _, l := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(l, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// waitMetric scrapes until series satisfies ok.
func (f *fixture) waitMetric(series string, ok func(float64) bool, limit time.Duration) float64 {
	f.t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(20 * time.Millisecond) {
		v := metric(f.scrape(), series)
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s is %v after %s", series, v, limit)
		}
	}
}

// guestHost is the VM: a netns whose eth0 carries the guest MAC, joined
// to the attachment's TAP by a relay that moves frames between the TAP fd
// (as QEMU holds it) and r0, eth0's veth peer.
type guestHost struct {
	ns   harness.Netns
	fd   int // packet socket on r0
	quit chan struct{}
	wg   sync.WaitGroup
}

func (f *fixture) guestHost(vm *guestVM) *guestHost {
	f.t.Helper()
	ns, err := harness.NewNetns(f.node.ID + "-guest")
	if err != nil {
		f.t.Fatal(err)
	}
	g := &guestHost{ns: ns, quit: make(chan struct{})}
	f.t.Cleanup(func() {
		g.stop()
		if err := ns.Delete(); err != nil {
			f.t.Error(err)
		}
	})
	if err := ns.Do(func() error { return g.setUp(vm.mac) }); err != nil {
		f.t.Fatal(err)
	}
	g.wg.Add(2)
	go g.tapToGuest(vm.fd)
	go g.guestToTap(vm.fd)
	return g
}

func (g *guestHost) setUp(mac net.HardwareAddr) error {
	// IPv6 off: the guest's own router solicitations and DAD would be
	// noise on a port this test counts DHCPv4 on.
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0o644); err != nil {
		return err
	}
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", HardwareAddr: mac}, PeerName: "r0"}
	if err := netlink.LinkAdd(v); err != nil {
		return fmt.Errorf("add guest veth: %w", err)
	}
	for _, name := range []string{"lo", "eth0", "r0"} {
		if err := netlink.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
			return err
		}
	}
	r0, err := netlink.LinkByName("r0")
	if err != nil {
		return err
	}
	proto := int(htons(unix.ETH_P_ALL))
	if g.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
		return err
	}
	if err := unix.Bind(g.fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: r0.Attrs().Index}); err != nil {
		return err
	}
	return unix.SetsockoptTimeval(g.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50_000})
}

func htons(v uint16) uint16 { return binary.BigEndian.Uint16([]byte{byte(v), byte(v >> 8)}) }

// tapToGuest: what the port sends the VM comes out of eth0's peer.
func (g *guestHost) tapToGuest(tap *os.File) {
	defer g.wg.Done()
	buf := make([]byte, 65536)
	for {
		select {
		case <-g.quit:
			return
		default:
		}
		_ = tap.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := tap.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return
		}
		if n > guest.VnetHdrLen {
			_, _ = unix.Write(g.fd, buf[guest.VnetHdrLen:n])
		}
	}
}

// guestToTap: what eth0 sends goes into the TAP, as QEMU writes it.
func (g *guestHost) guestToTap(tap *os.File) {
	defer g.wg.Done()
	buf := make([]byte, 65536)
	for {
		select {
		case <-g.quit:
			return
		default:
		}
		n, from, err := unix.Recvfrom(g.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue // what the relay itself wrote to r0
		}
		_, _ = tap.Write(append(make([]byte, guest.VnetHdrLen), buf[:n]...))
	}
}

func (g *guestHost) stop() {
	select {
	case <-g.quit:
		return
	default:
	}
	close(g.quit)
	g.wg.Wait()
	unix.Close(g.fd)
}

// udhcpc is busybox's DHCP client on the guest's eth0. Its script
// configures the address it is given (so renewals can be unicast) and
// records every event with what came with it.
type udhcpc struct {
	cmd *exec.Cmd
	out string
}

const udhcpcScript = `#!/bin/sh
case "$1" in
bound) ip addr add "$ip/$mask" dev "$interface" ;;
esac
echo "$1 ip=$ip mask=$mask subnet=$subnet router=$router dns=$dns domain=$domain search=$search mtu=$mtu staticroutes=$staticroutes lease=$lease serverid=$serverid" >> "$(dirname "$0")/events"
`

func (f *fixture) startUdhcpc(g *guestHost) *udhcpc {
	f.t.Helper()
	dir := f.t.TempDir()
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte(udhcpcScript), 0o755); err != nil {
		f.t.Fatal(err)
	}
	u := &udhcpc{out: filepath.Join(dir, "events")}
	u.cmd = exec.Command("/bin/busybox", "udhcpc", "-f", "-i", "eth0", "-s", script, "-t", "10", "-T", "1", "-n",
		"-O", "mtu", "-O", "search", "-O", "staticroutes")
	var log lockedBuffer
	u.cmd.Stdout, u.cmd.Stderr = &log, &log
	if err := g.ns.Do(u.cmd.Start); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		_ = u.cmd.Process.Kill()
		_ = u.cmd.Wait()
		if f.t.Failed() {
			f.t.Logf("udhcpc:\n%s", log.String())
		}
	})
	return u
}

// wait returns the nth line (from 1) of event kind, waiting for it.
func (u *udhcpc) wait(t *testing.T, kind string, nth int, limit time.Duration) string {
	t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(20 * time.Millisecond) {
		data, _ := os.ReadFile(u.out)
		n := 0
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, kind+" ") {
				if n++; n == nth {
					return l
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("udhcpc reported no %s event #%d within %s; events:\n%s", kind, nth, limit, data)
		}
	}
}

func (u *udhcpc) signal(t *testing.T, s syscall.Signal) {
	t.Helper()
	if err := u.cmd.Process.Signal(s); err != nil {
		t.Fatal(err)
	}
}

// dhcpFrom counts captured frames from mac to UDP port 67 (any IPv4).
func (c *packetCapture) dhcpFrom(mac net.HardwareAddr) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, b := range c.frames {
		if len(b) < 14+20+8 || !bytes.Equal(b[6:12], mac) || binary.BigEndian.Uint16(b[12:14]) != unix.ETH_P_IP || b[23] != unix.IPPROTO_UDP {
			continue
		}
		ihl := int(b[14]&0x0f) * 4
		if len(b) >= 14+ihl+4 && binary.BigEndian.Uint16(b[14+ihl+2:]) == 67 {
			n++
		}
	}
	return n
}
