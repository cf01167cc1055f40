package guest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Every wait in these tests is bounded; a TCG boot takes ~8 s here.
// Set TBGUEST_CONSOLE=1 to see the serial consoles as they boot.
const testTimeout = 120 * time.Second

var (
	imageOnce sync.Once
	image     Image
	imageErr  error
)

// testImage builds (or finds) the image in the default cache, once per run.
func testImage(t *testing.T) Image {
	t.Helper()
	imageOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		start := time.Now()
		image, imageErr = EnsureImage(ctx, DefaultCacheDir())
		t.Logf("EnsureImage took %v: %+v", time.Since(start).Round(time.Millisecond), image)
	})
	if imageErr != nil {
		t.Fatalf("EnsureImage: %v", imageErr)
	}
	return image
}

// ipCmd runs ip(8) with args, failing the test on error.
func ipCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// topology is a pod netns, holding TAPs bridged (br0) to a veth whose other
// end (vpeer, 10.99.0.1/24, 2001:db8:99::1/64) is in a peer netns. The
// bridge stands in for the plugin, which is not used by this package.
type topology struct {
	pod, peer string // netns names
	podPath   string
	peerPath  string
}

const (
	peerIP   = "10.99.0.1"
	peerIP6  = "2001:db8:99::1"
	tapOwner = "107"
)

// newTopology creates the namespaces and the bridge; cleanup removes them
// even when the test fails. Nothing is created in the root netns: the
// veth is created in the pod netns with its peer end placed straight into
// the peer netns.
func newTopology(t *testing.T) *topology {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	prefix := "tbg-" + hex.EncodeToString(b)
	tp := &topology{pod: prefix + "-pod1", peer: prefix + "-peer"}
	tp.podPath, tp.peerPath = "/var/run/netns/"+tp.pod, "/var/run/netns/"+tp.peer
	for _, ns := range []string{tp.pod, tp.peer} {
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() { deleteNetns(t, ns) })
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	}
	ipCmd(t, "-n", tp.pod, "link", "add", "br0", "type", "bridge")
	ipCmd(t, "-n", tp.pod, "link", "add", "vpod", "type", "veth", "peer", "name", "vpeer", "netns", tp.peer)
	ipCmd(t, "-n", tp.pod, "link", "set", "vpod", "master", "br0")
	ipCmd(t, "-n", tp.pod, "link", "set", "vpod", "up")
	ipCmd(t, "-n", tp.pod, "link", "set", "br0", "up")
	ipCmd(t, "-n", tp.peer, "addr", "add", peerIP+"/24", "dev", "vpeer")
	ipCmd(t, "-n", tp.peer, "addr", "add", peerIP6+"/64", "dev", "vpeer", "nodad")
	ipCmd(t, "-n", tp.peer, "link", "set", "vpeer", "up")
	return tp
}

// deleteNetns removes a namespace and all links in it; the links go first
// so that nothing can outlive the namespace.
func deleteNetns(t *testing.T, ns string) {
	t.Helper()
	out, _ := exec.Command("ip", "-n", ns, "-o", "link", "show").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if name != "lo" {
			exec.Command("ip", "-n", ns, "link", "del", name).Run()
		}
	}
	if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
		t.Errorf("delete netns %s: %v\n%s", ns, err, out)
	}
}

// addTap creates a persistent TAP like the plugin does (owner and group
// 107, no PI, vnet_hdr, multi_queue when asked) in the pod netns; when
// bridged, it is also bridged to the peer and set up (a TAP that stays
// down sends nothing, which lets tests read from it and time out).
func (tp *topology) addTap(t *testing.T, name string, multiQueue, bridged bool) {
	t.Helper()
	args := []string{"-n", tp.pod, "tuntap", "add", "dev", name, "mode", "tap",
		"user", tapOwner, "group", tapOwner, "vnet_hdr"}
	if multiQueue {
		args = append(args, "multi_queue")
	}
	ipCmd(t, args...)
	if bridged {
		ipCmd(t, "-n", tp.pod, "link", "set", name, "master", "br0")
		ipCmd(t, "-n", tp.pod, "link", "set", name, "up")
	}
}

// bootGuest boots a guest on tap and registers its cleanup, which prints
// the serial console when the test failed.
func bootGuest(ctx context.Context, t *testing.T, tp *topology, tap string, queues int, cmdline string) *VM {
	t.Helper()
	var console io.Writer
	if os.Getenv("TBGUEST_CONSOLE") != "" {
		console = prefixWriter{w: os.Stderr, prefix: tap + "| "}
	}
	start := time.Now()
	vm, err := Boot(ctx, BootOptions{
		Image:     testImage(t),
		NetNSPath: tp.podPath,
		TapName:   tap,
		Queues:    queues,
		Cmdline:   cmdline,
		Console:   console,
	})
	if err != nil {
		t.Fatalf("Boot on %s: %v", tap, err)
	}
	t.Cleanup(func() {
		if err := vm.Stop(); err != nil {
			t.Errorf("stop guest on %s: %v", tap, err)
		}
		if strings.Contains(vm.Output(), "TBERROR") {
			t.Errorf("guest on %s reported errors", tap)
		}
		if t.Failed() {
			t.Logf("serial console of the guest on %s:\n%s", tap, vm.Output())
		}
	})
	if line, err := vm.WaitFor(ctx, "TBREADY"); err != nil {
		t.Fatalf("guest on %s: %v", tap, err)
	} else {
		t.Logf("guest on %s ready after %v: %s", tap, time.Since(start).Round(time.Millisecond), line)
	}
	return vm
}

// prefixWriter prefixes each write (the console writes whole lines).
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, p.prefix+string(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// inNetns runs fn on a thread inside the namespace at nsPath.
func inNetns(t *testing.T, nsPath string, fn func() error) {
	t.Helper()
	if err := onNetNSThread(nsPath, fn); err != nil {
		t.Fatal(err)
	}
}

// tcpEcho checks that addr echoes a line back, connecting from nsPath.
func tcpEcho(t *testing.T, nsPath, addr string) {
	t.Helper()
	inNetns(t, nsPath, func() error {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		want := "hello-from-" + addr + "\n"
		if _, err := io.WriteString(conn, want); err != nil {
			return err
		}
		got := make([]byte, len(want))
		if _, err := io.ReadFull(conn, got); err != nil {
			return err
		}
		if string(got) != want {
			t.Errorf("echo from %s: got %q, want %q", addr, got, want)
		}
		return nil
	})
}

// echoServer listens on addr inside nsPath and echoes every connection
// until the test ends.
func echoServer(t *testing.T, nsPath, addr string) {
	t.Helper()
	var ln net.Listener
	inNetns(t, nsPath, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(30 * time.Second))
				io.Copy(conn, conn)
			}()
		}
	}()
}

// pingFrom pings ip from the namespace with busybox (busybox-static is a
// dependency of this package anyway; iputils may be missing).
func pingFrom(t *testing.T, ns, ip string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, busyboxPath, "ping", "-c", "3", "-W", "2", ip).CombinedOutput()
	if err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", ip, ns, err, out)
	}
	t.Logf("ping %s from %s:\n%s", ip, ns, strings.TrimSpace(string(out)))
}

// checkProbes requires one successful probe per target, and no failures.
func checkProbes(t *testing.T, vm *VM, want ...string) {
	t.Helper()
	got := map[string]Probe{}
	for _, p := range vm.Results() {
		t.Logf("probe: %s", p.Line)
		got[p.Kind+" "+p.Target] = p
		if !p.OK {
			t.Errorf("probe failed: %s", p.Line)
		}
	}
	for _, w := range want {
		if _, ok := got[w]; !ok {
			t.Errorf("no result for probe %q", w)
		}
	}
}
