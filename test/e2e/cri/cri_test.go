package cri

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/internal/state"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// What conf/cni/node1/vmnet3.conflist gives node1's pods.
const (
	conflist = "conf/cni/node1/vmnet3.conflist"
	network  = "vmnet3"
	hostAddr = "172.16.3.150/24" // hostAddress.static of node1
	podIf    = "eth0"            // the interface name containerd's CRI asks for
)

var ipamRange = [2]netip.Addr{netip.MustParseAddr("172.16.3.10"), netip.MustParseAddr("172.16.3.59")}

// TestCRI runs a pod sandbox through containerd's CRI with the project's
// conflist: runp gives the sandbox the IPAM address (inspectp's network
// status), the TAP owned by 107 in the sandbox's netns, the host port on
// the bridge and the node's address on the subnet; stopp and rmp leave
// the node as it was, libcni's cache empty and no process behind.
func TestCRI(t *testing.T) {
	harness.RequireRoot(t)
	if err := ensureTools(); err != nil {
		t.Fatal(err)
	}
	for _, fl := range flavors() {
		t.Run(fl.name, func(t *testing.T) {
			start := time.Now()
			runSandbox(t, fl)
			t.Logf("%s: %.1fs", fl.name, time.Since(start).Seconds())
		})
	}
}

func runSandbox(t *testing.T, fl flavor) {
	id := harness.RunID("tbc")
	node, err := harness.NewNode(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := node.Close(); err != nil {
			t.Error(err)
		}
	})
	dir := t.TempDir()
	scope := harness.Scope{Host: node.Host, Bridges: []string{harness.BridgeName},
		StateDir: filepath.Join(dir, "state"), IPAMDir: filepath.Join(dir, "ipam")}
	cgroupParent := "/" + id

	conf, err := sandboxConflist(scope, filepath.Join(dir, "plugin.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keepLog(t, filepath.Join(dir, "plugin.log")) })
	c := startContainerd(t, node, fl, cgroupParent)
	t.Logf("%s", version(t, c))
	if err := c.installConflist(conf); err != nil {
		t.Fatal(err)
	}
	if out, err := c.ctr("images", "import", pauseTar); err != nil {
		t.Fatalf("import the pause image: %v\n%s", err, out)
	}

	// The baseline is the node with containerd up: containerd 2.x sends
	// STATUS when it starts, which keeps a passed kernel probe in dataDir.
	before := read(t, scope)
	sid := runp(t, c, dir, id, cgroupParent)
	checkSandbox(t, c, fl, scope, sid)

	for _, verb := range []string{"stopp", "rmp"} {
		if out, err := c.crictl(verb, sid); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	if d := before.Diff(read(t, scope)); d != "" {
		t.Errorf("node not left as it was after rmp:\n%s", d)
	}
	if left := cacheEntries(t, c); len(left) > 0 {
		t.Errorf("libcni's cache still holds %v after rmp", left)
	}
	if procs := cgroupProcs(cgroupParent); len(procs) > 0 {
		t.Errorf("processes left in the pod's cgroups after rmp: %v", procs)
	}
}

// sandboxConflist is the project's conflist, adjusted only for the
// sandbox node: its bridge, the plugin's and host-local's dirs, and a log
// file.
func sandboxConflist(sc harness.Scope, logFile string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), conflist))
	if err != nil {
		return nil, err
	}
	var list map[string]any
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("%s: %w", conflist, err)
	}
	for _, p := range list["plugins"].([]any) {
		plugin := p.(map[string]any)
		if plugin["type"] == "tapbridge-cni" {
			plugin["bridge"], plugin["dataDir"], plugin["logFile"] = harness.BridgeName, sc.StateDir, logFile
			plugin["ipam"].(map[string]any)["dataDir"] = sc.IPAMDir
		}
	}
	return json.MarshalIndent(list, "", "  ")
}

func version(t *testing.T, c *containerd) string {
	out, err := run(filepath.Join(c.flavor.binDir, "containerd"), "--version")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// runp starts a pod sandbox and returns its ID.
func runp(t *testing.T, c *containerd, dir, id, cgroupParent string) string {
	t.Helper()
	pod, _ := json.Marshal(map[string]any{
		"metadata":      map[string]any{"name": "virt-launcher-vm1", "namespace": "vms", "uid": id, "attempt": 0},
		"hostname":      "vm1",
		"log_directory": filepath.Join(dir, "pods"),
		"linux":         map[string]any{"cgroup_parent": cgroupParent},
	})
	podFile := filepath.Join(dir, "pod.json")
	if err := os.WriteFile(podFile, pod, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := c.crictl("runp", podFile)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	sid := strings.TrimSpace(out)
	t.Cleanup(func() { // a failed test still takes the pod down through the CRI
		if _, err := c.crictl("inspectp", sid); err == nil {
			_, _ = c.crictl("stopp", sid)
			_, _ = c.crictl("rmp", sid)
		}
	})
	return sid
}

// checkSandbox checks the live sandbox: inspectp's address is the
// record's and in the IPAM range; the node holds exactly this attachment
// (host port on the bridge, host address, anti-spoof table, record,
// lease, and the sandbox's devices); the TAP is owned by 107; libcni ran
// the conflist at the flavor's cniVersion.
func checkSandbox(t *testing.T, c *containerd, fl flavor, scope harness.Scope, sid string) {
	t.Helper()
	ip := inspectpIP(t, c, sid)
	rec := onlyRecord(t, scope.StateDir)
	if rec.ContainerID != sid || rec.IfName != podIf || len(rec.IPs) != 1 {
		t.Fatalf("record %+v: want container %s, ifname %s, one IP", rec, sid, podIf)
	}
	if rec.IPs[0].Address.Addr() != ip {
		t.Errorf("inspectp says %s, the plugin's record %s", ip, rec.IPs[0].Address)
	}
	if ip.Compare(ipamRange[0]) < 0 || ip.Compare(ipamRange[1]) > 0 {
		t.Errorf("sandbox address %s is outside the IPAM range %s-%s", ip, ipamRange[0], ipamRange[1])
	}
	sandbox := bindSandboxNetns(t, c, rec.Netns, scope.Host.Name+"-sandbox")
	scope.Pods = []harness.Netns{sandbox}
	live := harness.Attachment{CID: sid, IfName: podIf, Network: network, Bridge: harness.BridgeName, HostAddr: hostAddr, Pod: sandbox}
	if err := read(t, scope).Live([]harness.Attachment{live}); err != nil {
		t.Error(err)
	}
	checkTapOwner(t, sandbox, rec.Tap, 107)
	if got := cachedVersion(t, c, sid); got != fl.cniVersion {
		t.Errorf("%s ran the conflist at cniVersion %s, want %s", fl.name, got, fl.cniVersion)
	}
	if err := sandbox.Delete(); err != nil { // before stopp: the test holds no reference to the sandbox's netns
		t.Fatal(err)
	}
}

// inspectpIP is the sandbox's address as the CRI reports it.
func inspectpIP(t *testing.T, c *containerd, sid string) netip.Addr {
	t.Helper()
	out, err := c.crictl("inspectp", "-o", "json", sid)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var st struct {
		Status struct {
			State   string `json:"state"`
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("inspectp: %v\n%s", err, out)
	}
	ip, err := netip.ParseAddr(st.Status.Network.IP)
	if err != nil || st.Status.State != "SANDBOX_READY" {
		t.Fatalf("inspectp: state %q, network ip %q:\n%s", st.Status.State, st.Status.Network.IP, out)
	}
	return ip
}

func onlyRecord(t *testing.T, dir string) state.Record {
	t.Helper()
	s, err := harness.ReadStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Records) != 1 {
		t.Fatalf("state dir holds %d records, want 1: %v", len(s.Records), s.Files)
	}
	for _, r := range s.Records {
		return r
	}
	panic("unreachable")
}

// bindSandboxNetns makes the sandbox's netns (a mount in containerd's
// mount namespace) visible to the test as a named netns of its own,
// removed by the test's cleanup if not before.
func bindSandboxNetns(t *testing.T, c *containerd, path, name string) harness.Netns {
	t.Helper()
	n := harness.Netns{Name: name}
	t.Cleanup(func() {
		if err := n.Delete(); err != nil {
			t.Error(err)
		}
	})
	src, err := c.openInRuntime(path, unix.O_PATH)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	f, err := os.Create(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", src.Fd()), n.Path(), "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind the sandbox's netns %s: %v", path, err)
	}
	return n
}

func checkTapOwner(t *testing.T, pod harness.Netns, tap string, uid uint32) {
	t.Helper()
	err := pod.Do(func() error {
		l, err := netlink.LinkByName(tap)
		if err != nil {
			return fmt.Errorf("the TAP %s in the sandbox: %w", tap, err)
		}
		tt, ok := l.(*netlink.Tuntap)
		if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP || tt.Owner != uid {
			return fmt.Errorf("the sandbox's %s is a %s (%v), want a TAP owned by %d", tap, l.Type(), tunOwner(l), uid)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func tunOwner(l netlink.Link) string {
	if tt, ok := l.(*netlink.Tuntap); ok {
		return fmt.Sprintf("mode %v, owner %d", tt.Mode, tt.Owner)
	}
	return "not a tun device"
}

// cachedVersion is the cniVersion of the result libcni cached for the
// sandbox (in containerd's mount namespace): the version it ran.
func cachedVersion(t *testing.T, c *containerd, sid string) string {
	t.Helper()
	b, err := c.readInRuntime(filepath.Join(libcniCache, network+"-"+sid+"-"+podIf))
	if err != nil {
		t.Fatalf("libcni's cached result: %v", err)
	}
	var cached struct {
		Result struct {
			CNIVersion string `json:"cniVersion"`
		} `json:"result"`
	}
	if err := json.Unmarshal(b, &cached); err != nil {
		t.Fatalf("libcni's cached result: %v\n%s", err, b)
	}
	return cached.Result.CNIVersion
}

// libcniCache is where containerd's libcni caches results (its default).
const libcniCache = "/var/lib/cni/results"

// cacheEntries lists libcni's cache in containerd's mount namespace.
func cacheEntries(t *testing.T, c *containerd) []string {
	t.Helper()
	f, err := c.openInRuntime(libcniCache, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func read(t *testing.T, sc harness.Scope) harness.State {
	t.Helper()
	s, err := harness.Read(sc)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// keepLog prints the plugin's log of a failed test.
func keepLog(t *testing.T, path string) {
	if b, err := os.ReadFile(path); err == nil && t.Failed() {
		t.Logf("plugin log:\n%s", b)
	}
}
