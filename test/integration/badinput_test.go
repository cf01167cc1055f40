package integration

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/internal/config"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// hdBadInput is one row of the F1 table: a config change or a raw stdin,
// an env change, the code expected and what the message must name.
type hdBadInput struct {
	name  string
	mods  []func(map[string]any)
	stdin string // replaces the config when set
	env   func(c *harness.Call)
	code  uint
	names string // the message must contain it
}

// F1: every class of bad input, by direct exec of ADD. Each gets its
// code, a message naming what is wrong, exactly one JSON document on
// stdout (Call.Run checks that), and leaves the node exactly as it was.
func TestBadInput(t *testing.T) {
	h := newHD(t)
	pod := h.pods(1)[0]
	// Objects the table points at: a veth named like a bridge, and a
	// bridge that is down.
	err := h.node.Host.Do(func() error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "notabridge"}, PeerName: "notabridge-p"}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-down"}})
	})
	if err != nil {
		t.Fatal(err)
	}
	before := h.snapshot()
	env := func(fn func(c *harness.Call)) func(c *harness.Call) { return fn }
	rows := []hdBadInput{
		{name: "malformed JSON", stdin: `{"cniVersion":"1.1.0","name":"vmnet","type":`, code: types.ErrDecodingFailure},
		{name: "trailing garbage", stdin: `{"cniVersion":"1.1.0","name":"vmnet","type":"tapbridge-cni","bridge":"br-test"} {}`, code: types.ErrDecodingFailure},
		{name: "bridge missing", mods: hdMods(hdDel("bridge")), code: types.ErrInvalidNetworkConfig, names: "bridge"},
		{name: "bridge name too long", mods: hdMods(hdSet("bridge", "br-0123456789abc")), code: types.ErrInvalidNetworkConfig, names: "br-0123456789abc"},
		{name: "bridge name with slash", mods: hdMods(hdSet("bridge", "br/x")), code: types.ErrInvalidNetworkConfig, names: "bridge"},
		{name: "mtu 67", mods: hdMods(hdSet("mtu", 67)), code: types.ErrInvalidNetworkConfig, names: "mtu"},
		{name: "mtu 65536", mods: hdMods(hdSet("mtu", 65536)), code: types.ErrInvalidNetworkConfig, names: "mtu"},
		{name: "mtu not a number", mods: hdMods(hdSet("mtu", "big")), code: types.ErrDecodingFailure, names: "mtu"},
		{name: "bad mac", mods: hdMods(hdSet("mac", "zz:zz:zz:zz:zz:zz")), code: types.ErrInvalidNetworkConfig, names: "mac"},
		{name: "multicast mac", mods: hdMods(hdSet("mac", "03:00:00:00:00:01")), code: types.ErrInvalidNetworkConfig, names: "mac"},
		{name: "zero mac", mods: hdMods(hdSet("runtimeConfig.mac", "00:00:00:00:00:00")), code: types.ErrInvalidNetworkConfig, names: "runtimeConfig.mac"},
		{name: "negative tap.owner", mods: hdMods(hdSet("tap.owner", -5)), code: types.ErrInvalidNetworkConfig, names: "tap.owner"},
		{name: "tap.owner too big", mods: hdMods(hdSet("tap.owner", int64(1)<<32)), code: types.ErrInvalidNetworkConfig, names: "tap.owner"},
		{name: "tap.group a name", mods: hdMods(hdSet("tap.group", "kvm")), code: types.ErrDecodingFailure, names: "tap.group"},
		{name: "static address is a network", mods: hdMods(hdStatic("10.77.0.0/24")), code: types.ErrInvalidNetworkConfig, names: "hostAddress.static[node-a]"},
		{name: "static address not an address", mods: hdMods(hdSet("hostAddress.static", map[string]any{"node-b": []string{"10.77.0.999/24"}})), code: types.ErrInvalidNetworkConfig, names: "hostAddress.static[node-b]"},
		{name: "bad pool", mods: hdMods(hdSet("hostAddress.pool", []string{"10.77.0.0/33"})), code: types.ErrInvalidNetworkConfig, names: "hostAddress.pool"},
		{name: "multicast pool", mods: hdMods(hdSet("hostAddress.pool", []string{"224.0.0.0/24"})), code: types.ErrInvalidNetworkConfig, names: "hostAddress.pool"},
		{name: "bad probeWait", mods: hdMods(hdSet("hostAddress.probeWait", "later")), code: types.ErrInvalidNetworkConfig, names: "hostAddress.probeWait"},
		{name: "relative dataDir", mods: hdMods(hdSet("dataDir", "var/lib/tapbridge")), code: types.ErrInvalidNetworkConfig, names: "dataDir"},
		{name: "relative logFile", mods: hdMods(hdSet("logFile", "tapbridge.log")), code: types.ErrInvalidNetworkConfig, names: "logFile"},
		{name: "bad lockTimeout", mods: hdMods(hdSet("lockTimeout", "soon")), code: types.ErrInvalidNetworkConfig, names: "lockTimeout"},
		{name: "negative lockTimeout", mods: hdMods(hdSet("lockTimeout", "-1s")), code: types.ErrInvalidNetworkConfig, names: "lockTimeout"},
		{name: "bad ipamTimeout", mods: hdMods(hdSet("ipamTimeout", "2h")), code: types.ErrInvalidNetworkConfig, names: "ipamTimeout"},
		{name: "bad logLevel", mods: hdMods(hdSet("logLevel", "loud")), code: types.ErrInvalidNetworkConfig, names: "logLevel"},
		{name: "bad runtimeConfig.ips", mods: hdMods(hdSet("runtimeConfig.ips", []string{"10.77.0.300"})), code: types.ErrInvalidNetworkConfig, names: "runtimeConfig.ips"},
		{name: "bad args.cni.ips", mods: hdMods(hdSet("args.cni.ips", []string{"ten"})), code: types.ErrInvalidNetworkConfig, names: "args.cni.ips"},
		{name: "bad prevResult", mods: hdMods(hdSet("prevResult", map[string]any{"cniVersion": "1.1.0", "ips": "none"})), code: types.ErrDecodingFailure, names: "prevResult"},
		{name: "bad CNI_ARGS MAC", env: env(func(c *harness.Call) { c.Args = "IgnoreUnknown=1;MAC=zz:zz" }), code: types.ErrInvalidEnvironmentVariables, names: "CNI_ARGS MAC"},
		{name: "bad CNI_ARGS IP", env: env(func(c *harness.Call) { c.Args = "IgnoreUnknown=1;IP=10.77.0.999" }), code: types.ErrInvalidEnvironmentVariables, names: "CNI_ARGS IP"},
		{name: "unknown CNI_ARGS key", env: env(func(c *harness.Call) { c.Args = "FOO=bar" }), code: types.ErrInvalidEnvironmentVariables, names: "FOO"},
		{name: "CNI_ARGS not key=value", env: env(func(c *harness.Call) { c.Args = "IgnoreUnknown=1;junk" }), code: types.ErrInvalidEnvironmentVariables, names: "CNI_ARGS"},
		{name: "missing CNI_NETNS", env: env(func(c *harness.Call) { c.Netns = "" }), code: types.ErrInvalidEnvironmentVariables, names: "CNI_NETNS"},
		{name: "missing CNI_IFNAME", env: env(func(c *harness.Call) { c.IfName = "" }), code: types.ErrInvalidEnvironmentVariables, names: "CNI_IFNAME"},
		{name: "bad container ID", env: env(func(c *harness.Call) { c.ContainerID = "bad/id" }), code: types.ErrInvalidEnvironmentVariables, names: "containerID"},
		{name: "ifname too long", env: env(func(c *harness.Call) { c.IfName = "pod0123456789abcd" }), code: types.ErrInvalidEnvironmentVariables, names: "interface name"},
		{name: "bad cniVersion", mods: hdMods(hdSet("cniVersion", "9.9.9")), code: types.ErrIncompatibleCNIVersion, names: "incompatible"},
		{name: "netns does not exist", env: env(func(c *harness.Call) { c.Netns = "/var/run/netns/" + h.node.ID + "-nosuchpod" }), code: types.ErrInvalidNetNS, names: h.node.ID + "-nosuchpod"},
		{name: "netns is a regular file", env: env(func(c *harness.Call) { c.Netns = "/etc/hostname" }), code: types.ErrInvalidNetNS, names: "/etc/hostname"},
		{name: "netns is a procfs file", env: env(func(c *harness.Call) { c.Netns = "/proc/self/status" }), code: types.ErrInvalidNetNS, names: "/proc/self/status"},
		{name: "netns is a mount namespace", env: env(func(c *harness.Call) { c.Netns = "/proc/self/ns/mnt" }), code: types.ErrInvalidNetNS, names: "/proc/self/ns/mnt"},
		{name: "netns is the plugin's own", env: env(func(c *harness.Call) { c.Netns = h.node.Host.Path() }), code: types.ErrInvalidNetNS, names: h.node.Host.Path()},
		{name: "bridge does not exist", mods: hdMods(hdSet("bridge", "br-nosuch")), code: types.ErrTryAgainLater, names: "br-nosuch"},
		{name: "bridge is a veth", mods: hdMods(hdSet("bridge", "notabridge")), code: types.ErrInvalidNetworkConfig, names: "notabridge"},
		{name: "bridge is down", mods: hdMods(hdSet("bridge", "br-down")), code: types.ErrTryAgainLater, names: "br-down"},
		{name: "mtu above the bridge's", mods: hdMods(hdSet("mtu", 9000)), code: types.ErrInvalidNetworkConfig, names: "bridge br-test's MTU 1500"},
	}
	for i, row := range rows {
		call := harness.Call{Command: "ADD", ContainerID: fmt.Sprintf("f1-%s-%d", h.node.ID, i), Netns: pod.Path(), IfName: "net1",
			Stdin: h.conf("1.1.0", row.mods...)}
		if row.stdin != "" {
			call.Stdin = []byte(row.stdin)
		}
		if row.env != nil {
			row.env(&call)
		}
		out, err := h.call(call)
		switch {
		case err != nil:
			t.Errorf("%s: %v", row.name, err)
		case out.RC == 0:
			t.Errorf("%s: ADD succeeded: %s", row.name, out.Stdout)
		case out.Err.Code != row.code:
			t.Errorf("%s: code %d, want %d: %s", row.name, out.Err.Code, row.code, out.Err.Msg)
		case !strings.Contains(out.Err.Msg+" "+out.Err.Details, row.names):
			t.Errorf("%s: message %q does not name %q", row.name, out.Err.Msg, row.names)
		}
		if err := h.liveErr(nil, []harness.Netns{pod}); err != nil {
			t.Errorf("%s: %v", row.name, err)
		}
		if d := before.Diff(h.snapshot()); d != "" {
			t.Errorf("%s changed the node:\n%s", row.name, d)
		}
	}
	t.Logf("%d bad inputs refused, node unchanged", len(rows))
}

func hdMods(m ...func(map[string]any)) []func(map[string]any) { return m }

// F4: a network configuration above config.MaxConfigBytes (1 MiB) is
// refused with 7 before it is read whole: with 2 MiB and 100 MiB of
// stdin the plugin's own peak RSS stays far below their size. Exactly
// 1 MiB is accepted. The stdin is streamed, and the peak is measured by
// GNU time: a child started by this (large) test process inherits the
// test's RSS in its ru_maxrss across execve.
func TestOversizedStdin(t *testing.T) {
	h := newHD(t)
	pod := h.pods(1)[0]
	before := h.snapshot()
	head := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"vmnet","type":"tapbridge-cni","bridge":%q,"dataDir":%q,"pad":"`, harness.BridgeName, h.stateDir())
	padded := func(size int) io.Reader {
		return io.MultiReader(strings.NewReader(head), io.LimitReader(hdRepeat('x'), int64(size-len(head)-2)), strings.NewReader(`"}`))
	}
	status := h.mustCall(harness.Call{Command: "STATUS", Stdin: hdReadAll(t, padded(config.MaxConfigBytes))})
	if status.RC != 0 {
		t.Errorf("STATUS with a config of exactly %d bytes: rc %d %s", config.MaxConfigBytes, status.RC, status.Stdout)
	}
	gnuTime, timeErr := exec.LookPath("/usr/bin/time")
	for _, size := range []int{config.MaxConfigBytes + 1, 2 << 20, 100 << 20} {
		call := harness.Call{Command: "ADD", ContainerID: "f4-" + h.node.ID, Netns: pod.Path(), IfName: "net1", Path: strings.Join(h.paths(pluginDir), ":")}
		rssFile := filepath.Join(t.TempDir(), "maxrss")
		argv := []string{hdReleaseBin()}
		if timeErr == nil {
			argv = append([]string{gnuTime, "-o", rssFile, "-f", "%M"}, argv...)
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env, cmd.Stdin = hdEnv(call), padded(size)
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		if err := h.node.Host.Do(cmd.Run); err != nil && cmd.ProcessState == nil {
			t.Fatal(err)
		}
		var e types.Error
		if cmd.ProcessState.ExitCode() == 0 || hdDecodeErr(stdout.Bytes(), &e) != nil || e.Code != types.ErrInvalidNetworkConfig || !strings.Contains(e.Msg, fmt.Sprint(config.MaxConfigBytes)) {
			t.Errorf("ADD with %d bytes of stdin: rc %d %q, want code 7 naming the %d-byte cap", size, cmd.ProcessState.ExitCode(), stdout.Bytes(), config.MaxConfigBytes)
		}
		if timeErr != nil {
			t.Logf("%d bytes of stdin: code %d; peak RSS not measured: %v", size, e.Code, timeErr)
			continue
		}
		data, err := os.ReadFile(rssFile)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Fields(string(data)) // "Command exited with non-zero status 1" first
		rss, err := strconv.Atoi(lines[len(lines)-1])
		if err != nil {
			t.Fatalf("GNU time output %q: %v", data, err)
		}
		if rss > 32<<10 {
			t.Errorf("ADD with %d bytes of stdin peaked at %d KiB RSS", size, rss)
		}
		t.Logf("%d bytes of stdin: code %d, peak RSS %d KiB", size, e.Code, rss)
	}
	h.expectLive(nil, []harness.Netns{pod})
	h.expectClean(before)
}

// hdRepeat is an endless stream of one byte.
type hdRepeat byte

func (r hdRepeat) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

func hdReadAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// F5: the CNI_ARGS kubelet and Multus send. With IgnoreUnknown=1 they
// are accepted through host-local. The K8S_* keys are accepted without
// it too (tapbridge knows them); host-local, which does not, refuses
// them and ADD passes its error on. Any other unknown key without
// IgnoreUnknown is code 4. Every refusal leaves the node CLEAN.
func TestKubeletArgs(t *testing.T) {
	h := newHD(t)
	pods := h.pods(3)
	before := h.snapshot()
	cid := "f5-" + h.node.ID
	k8s := "K8S_POD_NAMESPACE=vms;K8S_POD_NAME=virt-launcher-vm1;K8S_POD_INFRA_CONTAINER_ID=" + cid + ";K8S_POD_UID=0b9f6f3e-6c1e-4d0e-9d8a-7f0c1b2a3d4e"
	a := hdAtt{CID: cid, IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pods[0]}

	conf := h.conf("1.1.0")
	add := h.must(h.call(harness.Call{Command: "ADD", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Args: "IgnoreUnknown=1;" + k8s, Stdin: conf}))
	h.must(h.call(harness.Call{Command: "CHECK", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Args: "IgnoreUnknown=1;" + k8s, Stdin: hdWithPrev(t, conf, add.Stdout)}))
	h.expectLive([]hdAtt{a}, pods)
	h.must(h.call(harness.Call{Command: "DEL", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Args: "IgnoreUnknown=1;" + k8s, Stdin: conf}))
	h.expectLive(nil, pods)

	// Without IgnoreUnknown, L2 only (no IPAM): tapbridge accepts the K8S_* keys.
	l2 := h.conf("1.1.0", hdDel("ipam"))
	b := a
	b.CID, b.Pod, b.NoIPAM = cid+"-l2", pods[1], true
	h.must(h.call(harness.Call{Command: "ADD", ContainerID: b.CID, Netns: b.Pod.Path(), IfName: b.IfName, Args: k8s, Stdin: l2}))
	h.expectLive([]hdAtt{b}, pods)
	h.must(h.call(harness.Call{Command: "DEL", ContainerID: b.CID, Netns: b.Pod.Path(), IfName: b.IfName, Args: k8s, Stdin: l2}))
	h.expectLive(nil, pods)

	// Without IgnoreUnknown through host-local: host-local's refusal is passed on.
	out := h.mustCall(harness.Call{Command: "ADD", ContainerID: cid + "-hl", Netns: pods[2].Path(), IfName: "net1", Args: k8s, Stdin: conf})
	if out.RC == 0 || !strings.Contains(out.Err.Msg, "IPAM host-local ADD") || !strings.Contains(out.Err.Msg, "K8S_POD_NAMESPACE") {
		t.Errorf("ADD with K8S_* keys, no IgnoreUnknown, through host-local: rc %d %s", out.RC, out.Stdout)
	}
	h.expectLive(nil, pods)

	// Any other unknown key, without IgnoreUnknown: refused by tapbridge.
	out = h.mustCall(harness.Call{Command: "ADD", ContainerID: cid + "-foo", Netns: pods[2].Path(), IfName: "net1", Args: k8s + ";FOO=bar", Stdin: l2})
	if out.RC == 0 || out.Err.Code != types.ErrInvalidEnvironmentVariables || !strings.Contains(out.Err.Msg, "FOO") {
		t.Errorf("ADD with an unknown CNI_ARGS key: rc %d %s, want code 4 naming FOO", out.RC, out.Stdout)
	}
	h.expectLive(nil, pods)
	h.expectClean(before)
}
