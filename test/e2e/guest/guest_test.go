package guest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// TestBootReachable boots a guest on a single-queue TAP, reaches it from
// the peer (ping, TCP echo) and has it reach the peer (ping over IPv4 and
// IPv6, TCP echo) with its probes.
func TestBootReachable(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	tp := newTopology(t)
	tp.addTap(t, "tap1", false, true)
	echoServer(t, tp.peerPath, peerIP+":7001")

	vm := bootGuest(ctx, t, tp, "tap1", 1,
		"tb.ip=10.99.0.2/24 tb.ip6=2001:db8:99::2/64 tb.hold=1 tb.retry=20 "+
			"tb.ping="+peerIP+","+peerIP6+" tb.tcp="+peerIP+":7001")

	checkQemuProcess(t, vm, tp.podPath)
	pingFrom(t, tp.peer, "10.99.0.2")
	tcpEcho(t, tp.peerPath, "10.99.0.2:7777")
	if _, err := vm.WaitFor(ctx, "TBDONE"); err != nil {
		t.Fatal(err)
	}
	checkProbes(t, vm, "ping "+peerIP, "ping "+peerIP6, "tcp "+peerIP+":7001")
	if _, err := vm.WaitFor(ctx, "TBHOLD"); err != nil {
		t.Fatal(err)
	}
	// The guest stays up after its probes with tb.hold=1.
	pingFrom(t, tp.peer, "10.99.0.2")

	if err := vm.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := vm.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := unix.Kill(vm.PID(), 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("qemu %d still exists after Stop (kill 0: %v)", vm.PID(), err)
	}
	if _, err := os.Stat(vm.tmpDir); !os.IsNotExist(err) {
		t.Errorf("guest temp dir %s left after Stop: %v", vm.tmpDir, err)
	}
}

// checkQemuProcess checks that QEMU runs as 107:107 without supplementary
// groups, inside the pod netns.
func checkQemuProcess(t *testing.T, vm *VM, podPath string) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", vm.PID()))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"Uid": "107 107 107 107", "Gid": "107 107 107 107", "Groups": ""}
	for _, line := range strings.Split(string(status), "\n") {
		key, val, _ := strings.Cut(line, ":")
		if w, ok := want[key]; ok {
			if got := strings.Join(strings.Fields(val), " "); got != w {
				t.Errorf("qemu %s: got %q, want %q", key, got, w)
			}
			delete(want, key)
		}
	}
	if len(want) > 0 {
		t.Errorf("qemu status lacks %v", want)
	}
	var pod, qemu unix.Stat_t
	if err := unix.Stat(podPath, &pod); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", vm.PID()), &qemu); err != nil {
		t.Fatal(err)
	}
	if pod.Ino != qemu.Ino || pod.Dev != qemu.Dev {
		t.Errorf("qemu is not in the pod netns %s", podPath)
	}
}

// TestBootMultiQueue boots with two queues on a multi-queue TAP: QEMU gets
// two fds, the TAP reports both attached, and the guest is reachable.
func TestBootMultiQueue(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	tp := newTopology(t)
	tp.addTap(t, "tap1", true, true)

	vm := bootGuest(ctx, t, tp, "tap1", 2, "tb.ip=10.99.0.2/24 tb.hold=1")
	ready, _ := vm.WaitFor(ctx, "TBREADY")
	if !strings.Contains(ready, "queues=2") {
		t.Errorf("guest does not use 2 queues: %s", ready)
	}
	details := ipCmd(t, "-n", tp.pod, "-d", "link", "show", "tap1")
	if !regexp.MustCompile(`multi_queue numqueues 2\b`).MatchString(details) {
		t.Errorf("tap1 does not have 2 queues attached:\n%s", details)
	}
	pingFrom(t, tp.peer, "10.99.0.2")
	tcpEcho(t, tp.peerPath, "10.99.0.2:7777")

	// Cancelling the boot context stops the VM.
	cancel()
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	var exit *exec.ExitError
	if err := vm.Wait(wctx); !errors.As(err, &exit) {
		t.Errorf("qemu was not killed when its context ended: %v", err)
	}
}

// TestTwoGuests boots a prober and then a responder on two TAPs of the
// same bridge; the prober retries until the responder is up, reaches it,
// and powers off by itself once done.
func TestTwoGuests(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	tp := newTopology(t)
	tp.addTap(t, "tap1", false, true)
	tp.addTap(t, "tap2", false, true)

	prober := bootGuest(ctx, t, tp, "tap2", 1,
		"tb.ip=10.99.0.3/24 tb.name=prober tb.retry=60 tb.ping=10.99.0.2 tb.tcp=10.99.0.2:7777")
	bootGuest(ctx, t, tp, "tap1", 1, "tb.ip=10.99.0.2/24 tb.name=responder tb.hold=1")
	if err := prober.Wait(ctx); err != nil {
		t.Fatalf("prober did not power off cleanly: %v", err)
	}
	if _, err := prober.WaitFor(ctx, "TBDONE"); err != nil {
		t.Fatal(err)
	}
	checkProbes(t, prober, "ping 10.99.0.2", "tcp 10.99.0.2:7777")
}

// TestOpenTapChecks exercises the kernel's checks on TUNSETIFF that the
// plugin relies on: only the owner may attach, and the multi-queue flag
// must match the device.
func TestOpenTapChecks(t *testing.T) {
	harness.RequireRoot(t)
	tp := newTopology(t)
	tp.addTap(t, "tapsq", false, false)
	tp.addTap(t, "tapmq", true, false)

	cases := []struct {
		name     string
		tap      string
		queues   int
		uid, gid int
		want     error
	}{
		{"owner single-queue", "tapsq", 1, 107, 107, nil},
		{"owner multi-queue", "tapmq", 3, 107, 107, nil},
		{"other user", "tapsq", 1, 108, 108, unix.EPERM},
		{"other user multi-queue", "tapmq", 2, 108, 108, unix.EPERM},
		{"multi-queue flag on single-queue tap", "tapsq", 2, 107, 107, unix.EINVAL},
		{"no multi-queue flag on multi-queue tap", "tapmq", 1, 107, 107, unix.EINVAL},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			files, err := OpenTap(tp.podPath, c.tap, c.queues, c.uid, c.gid)
			defer closeFiles(files)
			if c.want == nil {
				if err != nil {
					t.Fatalf("OpenTap: %v", err)
				}
				if len(files) != c.queues {
					t.Fatalf("OpenTap returned %d fds, want %d", len(files), c.queues)
				}
				// The fds use the poller, so a read on a TAP that is down times out.
				files[0].SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if _, err := files[0].Read(make([]byte, 2048)); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("read from idle tap: got %v, want a deadline error", err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("OpenTap: got %v, want %v", err, c.want)
			}
			t.Logf("OpenTap: %v", err)
		})
	}
	if uid, gid := os.Getuid(), os.Getgid(); uid != 0 || gid != 0 {
		t.Errorf("process credentials changed to %d:%d", uid, gid)
	}
}

// TestBootErrors checks that a failed boot reports why and leaves no
// process or temp dir behind.
func TestBootErrors(t *testing.T) {
	harness.RequireRoot(t)
	img := testImage(t)
	tp := newTopology(t)
	tp.addTap(t, "tapsq", false, false)
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "tbguest-*"))

	cases := []struct {
		name string
		opts BootOptions
		want error
	}{
		// Creating a TAP needs CAP_NET_ADMIN, which uid 107 lacks.
		{"missing tap", BootOptions{TapName: "nosuchtap"}, unix.EPERM},
		{"wrong owner", BootOptions{TapName: "tapsq", UID: 108, GID: 108}, unix.EPERM},
		{"multi-queue on single-queue tap", BootOptions{TapName: "tapsq", Queues: 2}, unix.EINVAL},
		{"missing netns", BootOptions{TapName: "tapsq", NetNSPath: "/var/run/netns/" + tp.pod + "-gone"}, unix.ENOENT},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Image = img
			if c.opts.NetNSPath == "" {
				c.opts.NetNSPath = tp.podPath
			}
			vm, err := Boot(context.Background(), c.opts)
			if err == nil {
				vm.Stop()
				t.Fatal("Boot succeeded")
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Boot: got %v, want %v", err, c.want)
			}
			t.Logf("Boot: %v", err)
		})
	}
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "tbguest-*"))
	if len(after) > len(before) {
		t.Errorf("failed boots left temp dirs: before %v, after %v", before, after)
	}
}

func TestParseProbe(t *testing.T) {
	p, ok := ParseProbe("[   9.1] junk TBPROBE ping 10.99.0.1 ok rtt=1.234\r")
	if !ok || p.Kind != "ping" || p.Target != "10.99.0.1" || !p.OK || p.RTT.Microseconds() != 1234 {
		t.Errorf("ParseProbe ok line: %+v %v", p, ok)
	}
	p, ok = ParseProbe("TBPROBE tcp [2001:db8::1]:80 fail")
	if !ok || p.Kind != "tcp" || p.Target != "[2001:db8::1]:80" || p.OK {
		t.Errorf("ParseProbe fail line: %+v %v", p, ok)
	}
	if _, ok := ParseProbe("TBREADY ip=10.99.0.2/24"); ok {
		t.Error("ParseProbe accepted a non-probe line")
	}
}
