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

// badInput is one row of the F1 table: a config change or a raw stdin,
// an env change, the code expected and what the message must name.
type badInput struct {
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
	f := newFixture(t)
	pod := f.pods(1)[0]
	// Objects the table points at: a veth named like a bridge, and a
	// bridge that is down.
	err := f.node.Host.Do(func() error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "notabridge"}, PeerName: "notabridge-p"}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-down"}})
	})
	if err != nil {
		t.Fatal(err)
	}
	before := f.snapshot()
	env := func(fn func(c *harness.Call)) func(c *harness.Call) { return fn }
	rows := []badInput{
		{name: "malformed JSON", stdin: `{"cniVersion":"1.1.0","name":"vmnet","type":`, code: types.ErrDecodingFailure},
		{name: "trailing garbage", stdin: `{"cniVersion":"1.1.0","name":"vmnet","type":"tapbridge-cni","bridge":"br-test"} {}`, code: types.ErrDecodingFailure},
		{name: "bridge missing", mods: mods(unset("bridge")), code: types.ErrInvalidNetworkConfig, names: "bridge"},
		{name: "bridge name too long", mods: mods(set("bridge", "br-0123456789abc")), code: types.ErrInvalidNetworkConfig, names: "br-0123456789abc"},
		{name: "bridge name with slash", mods: mods(set("bridge", "br/x")), code: types.ErrInvalidNetworkConfig, names: "bridge"},
		{name: "mtu 67", mods: mods(set("mtu", 67)), code: types.ErrInvalidNetworkConfig, names: "mtu"},
		{name: "mtu 65536", mods: mods(set("mtu", 65536)), code: types.ErrInvalidNetworkConfig, names: "mtu"},
		{name: "mtu not a number", mods: mods(set("mtu", "big")), code: types.ErrDecodingFailure, names: "mtu"},
		{name: "bad mac", mods: mods(set("mac", "zz:zz:zz:zz:zz:zz")), code: types.ErrInvalidNetworkConfig, names: "mac"},
		{name: "multicast mac", mods: mods(set("mac", "03:00:00:00:00:01")), code: types.ErrInvalidNetworkConfig, names: "mac"},
		{name: "zero mac", mods: mods(set("runtimeConfig.mac", "00:00:00:00:00:00")), code: types.ErrInvalidNetworkConfig, names: "runtimeConfig.mac"},
		{name: "negative tap.owner", mods: mods(set("tap.owner", -5)), code: types.ErrInvalidNetworkConfig, names: "tap.owner"},
		{name: "tap.owner too big", mods: mods(set("tap.owner", int64(1)<<32)), code: types.ErrInvalidNetworkConfig, names: "tap.owner"},
		{name: "tap.group a name", mods: mods(set("tap.group", "kvm")), code: types.ErrDecodingFailure, names: "tap.group"},
		{name: "static address is a network", mods: mods(staticHostAddrs("10.77.0.0/24")), code: types.ErrInvalidNetworkConfig, names: "hostAddress.static[node-a]"},
		{name: "static address not an address", mods: mods(set("hostAddress.static", map[string]any{"node-b": []string{"10.77.0.999/24"}})), code: types.ErrInvalidNetworkConfig, names: "hostAddress.static[node-b]"},
		{name: "bad pool", mods: mods(set("hostAddress.pool", []string{"10.77.0.0/33"})), code: types.ErrInvalidNetworkConfig, names: "hostAddress.pool"},
		{name: "multicast pool", mods: mods(set("hostAddress.pool", []string{"224.0.0.0/24"})), code: types.ErrInvalidNetworkConfig, names: "hostAddress.pool"},
		{name: "bad probeWait", mods: mods(set("hostAddress.probeWait", "later")), code: types.ErrInvalidNetworkConfig, names: "hostAddress.probeWait"},
		{name: "relative dataDir", mods: mods(set("dataDir", "var/lib/tapbridge")), code: types.ErrInvalidNetworkConfig, names: "dataDir"},
		{name: "relative logFile", mods: mods(set("logFile", "tapbridge.log")), code: types.ErrInvalidNetworkConfig, names: "logFile"},
		{name: "bad lockTimeout", mods: mods(set("lockTimeout", "soon")), code: types.ErrInvalidNetworkConfig, names: "lockTimeout"},
		{name: "negative lockTimeout", mods: mods(set("lockTimeout", "-1s")), code: types.ErrInvalidNetworkConfig, names: "lockTimeout"},
		{name: "bad ipamTimeout", mods: mods(set("ipamTimeout", "2h")), code: types.ErrInvalidNetworkConfig, names: "ipamTimeout"},
		{name: "bad logLevel", mods: mods(set("logLevel", "loud")), code: types.ErrInvalidNetworkConfig, names: "logLevel"},
		{name: "bad runtimeConfig.ips", mods: mods(set("runtimeConfig.ips", []string{"10.77.0.300"})), code: types.ErrInvalidNetworkConfig, names: "runtimeConfig.ips"},
		{name: "bad args.cni.ips", mods: mods(set("args.cni.ips", []string{"ten"})), code: types.ErrInvalidNetworkConfig, names: "args.cni.ips"},
		{name: "bad prevResult", mods: mods(set("prevResult", map[string]any{"cniVersion": "1.1.0", "ips": "none"})), code: types.ErrDecodingFailure, names: "prevResult"},
		{name: "bad CNI_ARGS MAC", env: env(func(c *harness.Call) { c.Args = "IgnoreUnknown=1;MAC=zz:zz" }), code: types.ErrInvalidEnvironmentVariables, names: "CNI_ARGS MAC"},
		{name: "bad CNI_ARGS IP", env: env(func(c *harness.Call) { c.Args = "IgnoreUnknown=1;IP=10.77.0.999" }), code: types.ErrInvalidEnvironmentVariables, names: "CNI_ARGS IP"},
		{name: "unknown CNI_ARGS key", env: env(func(c *harness.Call) { c.Args = "FOO=bar" }), code: types.ErrInvalidEnvironmentVariables, names: "FOO"},
		{name: "CNI_ARGS not key=value", env: env(func(c *harness.Call) { c.Args = "IgnoreUnknown=1;junk" }), code: types.ErrInvalidEnvironmentVariables, names: "CNI_ARGS"},
		{name: "missing CNI_NETNS", env: env(func(c *harness.Call) { c.Netns = "" }), code: types.ErrInvalidEnvironmentVariables, names: "CNI_NETNS"},
		{name: "missing CNI_IFNAME", env: env(func(c *harness.Call) { c.IfName = "" }), code: types.ErrInvalidEnvironmentVariables, names: "CNI_IFNAME"},
		{name: "bad container ID", env: env(func(c *harness.Call) { c.ContainerID = "bad/id" }), code: types.ErrInvalidEnvironmentVariables, names: "containerID"},
		{name: "ifname too long", env: env(func(c *harness.Call) { c.IfName = "pod0123456789abcd" }), code: types.ErrInvalidEnvironmentVariables, names: "interface name"},
		{name: "bad cniVersion", mods: mods(set("cniVersion", "9.9.9")), code: types.ErrIncompatibleCNIVersion, names: "incompatible"},
		{name: "netns does not exist", env: env(func(c *harness.Call) { c.Netns = "/var/run/netns/" + f.node.ID + "-nosuchpod" }), code: types.ErrInvalidNetNS, names: f.node.ID + "-nosuchpod"},
		{name: "netns is a regular file", env: env(func(c *harness.Call) { c.Netns = "/etc/hostname" }), code: types.ErrInvalidNetNS, names: "/etc/hostname"},
		{name: "netns is a procfs file", env: env(func(c *harness.Call) { c.Netns = "/proc/self/status" }), code: types.ErrInvalidNetNS, names: "/proc/self/status"},
		{name: "netns is a mount namespace", env: env(func(c *harness.Call) { c.Netns = "/proc/self/ns/mnt" }), code: types.ErrInvalidNetNS, names: "/proc/self/ns/mnt"},
		{name: "netns is the plugin's own", env: env(func(c *harness.Call) { c.Netns = f.node.Host.Path() }), code: types.ErrInvalidNetNS, names: f.node.Host.Path()},
		{name: "bridge does not exist", mods: mods(set("bridge", "br-nosuch")), code: types.ErrTryAgainLater, names: "br-nosuch"},
		{name: "bridge is a veth", mods: mods(set("bridge", "notabridge")), code: types.ErrInvalidNetworkConfig, names: "notabridge"},
		{name: "bridge is down", mods: mods(set("bridge", "br-down")), code: types.ErrTryAgainLater, names: "br-down"},
		{name: "mtu above the bridge's", mods: mods(set("mtu", 9000)), code: types.ErrInvalidNetworkConfig, names: "bridge br-test's MTU 1500"},
	}
	for i, row := range rows {
		call := harness.Call{Command: "ADD", ContainerID: fmt.Sprintf("f1-%s-%d", f.node.ID, i), Netns: pod.Path(), IfName: "net1",
			Stdin: f.conf("1.1.0", row.mods...)}
		if row.stdin != "" {
			call.Stdin = []byte(row.stdin)
		}
		if row.env != nil {
			row.env(&call)
		}
		out, err := f.call(call)
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
		if err := f.liveErr(nil, []harness.Netns{pod}); err != nil {
			t.Errorf("%s: %v", row.name, err)
		}
		if d := before.Diff(f.snapshot()); d != "" {
			t.Errorf("%s changed the node:\n%s", row.name, d)
		}
	}
	t.Logf("%d bad inputs refused, node unchanged", len(rows))
}

// F4: a network configuration above config.MaxConfigBytes (1 MiB) is
// refused with 7 before it is read whole: with 2 MiB and 100 MiB of
// stdin the plugin's own peak RSS stays far below their size. Exactly
// 1 MiB is accepted. The stdin is streamed, and the peak is measured by
// GNU time: a child started by this (large) test process inherits the
// test's RSS in its ru_maxrss across execve.
func TestOversizedStdin(t *testing.T) {
	f := newFixture(t)
	pod := f.pods(1)[0]
	before := f.snapshot()
	head := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"vmnet","type":"tapbridge-cni","bridge":%q,"dataDir":%q,"pad":"`, harness.BridgeName, f.stateDir())
	padded := func(size int) io.Reader {
		return io.MultiReader(strings.NewReader(head), io.LimitReader(repeatByte('x'), int64(size-len(head)-2)), strings.NewReader(`"}`))
	}
	status := f.exec(harness.Call{Command: "STATUS", Stdin: readAll(t, padded(config.MaxConfigBytes))})
	if status.RC != 0 {
		t.Errorf("STATUS with a config of exactly %d bytes: rc %d %s", config.MaxConfigBytes, status.RC, status.Stdout)
	}
	gnuTime, err := exec.LookPath("/usr/bin/time")
	if err != nil {
		t.Fatalf("the peak-RSS check needs GNU time (scripts/install-deps.sh installs it): %v", err)
	}
	for _, size := range []int{config.MaxConfigBytes + 1, 2 << 20, 100 << 20} {
		call := harness.Call{Command: "ADD", ContainerID: "f4-" + f.node.ID, Netns: pod.Path(), IfName: "net1", Path: strings.Join(f.paths(pluginDir), ":")}
		rssFile := filepath.Join(t.TempDir(), "maxrss")
		argv := []string{gnuTime, "-o", rssFile, "-f", "%M", releaseBin()}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env, cmd.Stdin = call.Env(), padded(size)
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		if err := f.node.Host.Do(cmd.Run); err != nil && cmd.ProcessState == nil {
			t.Fatal(err)
		}
		var e types.Error
		if cmd.ProcessState.ExitCode() == 0 || decodeCNIError(stdout.Bytes(), &e) != nil || e.Code != types.ErrInvalidNetworkConfig || !strings.Contains(e.Msg, fmt.Sprint(config.MaxConfigBytes)) {
			t.Errorf("ADD with %d bytes of stdin: rc %d %q, want code 7 naming the %d-byte cap", size, cmd.ProcessState.ExitCode(), stdout.Bytes(), config.MaxConfigBytes)
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
	f.expectLive(nil, []harness.Netns{pod})
	f.expectClean(before)
}

// repeatByte is an endless stream of one byte.
type repeatByte byte

func (r repeatByte) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

func readAll(t *testing.T, r io.Reader) []byte {
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
	f := newFixture(t)
	pods := f.pods(3)
	before := f.snapshot()
	cid := "f5-" + f.node.ID
	k8s := "K8S_POD_NAMESPACE=vms;K8S_POD_NAME=virt-launcher-vm1;K8S_POD_INFRA_CONTAINER_ID=" + cid + ";K8S_POD_UID=0b9f6f3e-6c1e-4d0e-9d8a-7f0c1b2a3d4e"
	a := harness.Attachment{CID: cid, IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pods[0]}

	conf := f.conf("1.1.0")
	add := f.must(f.call(harness.Call{Command: "ADD", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Args: "IgnoreUnknown=1;" + k8s, Stdin: conf}))
	f.must(f.call(harness.Call{Command: "CHECK", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Args: "IgnoreUnknown=1;" + k8s, Stdin: f.withPrev(conf, add.Stdout)}))
	f.expectLive([]harness.Attachment{a}, pods)
	f.must(f.call(harness.Call{Command: "DEL", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Args: "IgnoreUnknown=1;" + k8s, Stdin: conf}))
	f.expectLive(nil, pods)

	// Without IgnoreUnknown, L2 only (no IPAM): tapbridge accepts the K8S_* keys.
	l2 := f.conf("1.1.0", unset("ipam"))
	b := a
	b.CID, b.Pod, b.NoIPAM = cid+"-l2", pods[1], true
	f.must(f.call(harness.Call{Command: "ADD", ContainerID: b.CID, Netns: b.Pod.Path(), IfName: b.IfName, Args: k8s, Stdin: l2}))
	f.expectLive([]harness.Attachment{b}, pods)
	f.must(f.call(harness.Call{Command: "DEL", ContainerID: b.CID, Netns: b.Pod.Path(), IfName: b.IfName, Args: k8s, Stdin: l2}))
	f.expectLive(nil, pods)

	// Without IgnoreUnknown through host-local: host-local's refusal is passed on.
	out := f.exec(harness.Call{Command: "ADD", ContainerID: cid + "-hl", Netns: pods[2].Path(), IfName: "net1", Args: k8s, Stdin: conf})
	if out.RC == 0 || !strings.Contains(out.Err.Msg, "IPAM host-local ADD") || !strings.Contains(out.Err.Msg, "K8S_POD_NAMESPACE") {
		t.Errorf("ADD with K8S_* keys, no IgnoreUnknown, through host-local: rc %d %s", out.RC, out.Stdout)
	}
	f.expectLive(nil, pods)

	// Any other unknown key, without IgnoreUnknown: refused by tapbridge.
	out = f.exec(harness.Call{Command: "ADD", ContainerID: cid + "-foo", Netns: pods[2].Path(), IfName: "net1", Args: k8s + ";FOO=bar", Stdin: l2})
	if out.RC == 0 || out.Err.Code != types.ErrInvalidEnvironmentVariables || !strings.Contains(out.Err.Msg, "FOO") {
		t.Errorf("ADD with an unknown CNI_ARGS key: rc %d %s, want code 4 naming FOO", out.RC, out.Stdout)
	}
	f.expectLive(nil, pods)
	f.expectClean(before)
}

// DEL with a config ADD would refuse, in a field DEL does not use, still
// tears the attachment down and succeeds: a runtime (or Multus replaying
// its cached config) retries a failed DEL for good, and an attachment a
// laxer tapbridge made must not outlive an upgrade. A DEL with such a
// config and nothing attached succeeds too; one whose fields DEL needs
// are wrong still fails, by name.
func TestDelWithConfigAddRefuses(t *testing.T) {
	f := newFixture(t)
	pod := f.pods(1)[0]
	before := f.snapshot()
	good := f.conf("1.1.0")
	bad := f.conf("1.1.0", set("hostAddress.pool", []string{"10.77.0.0/33"}), set("tap.owner", -5), set("logLevel", "loud"))
	a := harness.Attachment{CID: "delbad-" + f.node.ID, IfName: "pod0de1bad", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pod}
	if out := f.exec(harness.Call{Command: "ADD", ContainerID: a.CID, Netns: pod.Path(), IfName: a.IfName, Stdin: bad}); out.RC == 0 || out.Err.Code != types.ErrInvalidNetworkConfig {
		t.Fatalf("ADD with the bad config: rc %d %s, want code 7", out.RC, out.Stdout)
	}
	f.must(f.del(bad, a)) // nothing attached
	f.expectClean(before)
	f.must(f.add(good, a))
	f.expectLive([]harness.Attachment{a}, []harness.Netns{pod})
	f.must(f.del(bad, a))
	f.expectClean(before)
	out := f.exec(harness.Call{Command: "DEL", ContainerID: a.CID, Netns: pod.Path(), IfName: a.IfName,
		Stdin: f.conf("1.1.0", set("dataDir", "relative"))})
	if out.RC == 0 || out.Err.Code != types.ErrInvalidNetworkConfig || !strings.Contains(out.Err.Msg, "dataDir") {
		t.Fatalf("DEL with a relative dataDir: rc %d %s, want code 7 naming dataDir", out.RC, out.Stdout)
	}
}
