package plugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/internal/config"
	"github.com/tapbridge/tapbridge-cni/internal/plugin"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// fuzzPrefix names this process's namespaces: "tbf<pid>-<8 hex>-...", so
// that a later run can remove those of a run that died mid-iteration.
var fuzzPrefix = regexp.MustCompile(`^tbf(\d+)-[0-9a-f]{8}-`)

// TestMain sweeps, once the tests (or the fuzzing) are over, the
// namespaces of fuzz workers that the coordinator killed mid-input: their
// own cleanup never ran. A namespace it cannot remove fails the run.
func TestMain(m *testing.M) {
	code := m.Run()
	if err := sweepDeadFuzzNetns(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = max(code, 1)
	}
	os.Exit(code)
}

// sweepDeadFuzzNetns removes namespaces left by fuzz processes that no
// longer exist (a fuzz worker killed between its create and its delete).
func sweepDeadFuzzNetns() error {
	entries, _ := os.ReadDir(harness.NetnsDir)
	var errs []error
	for _, e := range entries {
		m := fuzzPrefix.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid != os.Getpid() && unix.Kill(pid, 0) == unix.ESRCH {
			errs = append(errs, harness.Netns{Name: e.Name()}.Delete())
		}
	}
	return errors.Join(errs...)
}

func fuzzAddDelSeeds() []string {
	head := `{"cniVersion":"1.1.0","name":"fz","type":"tapbridge-cni","bridge":"br-test"`
	static := `"hostAddress":{"nodeName":"n","static":{"n":["10.99.0.250/24"]}}`
	hostLocal := `"ipam":{"type":"host-local","ranges":[[{"subnet":"10.99.0.0/24","rangeStart":"10.99.0.10","rangeEnd":"10.99.0.20"}]]}`
	return []string{
		head + `,` + static + `,` + hostLocal + `}`,
		head + `,` + static + `}`, // L2 only
		head + `,` + static + `,"ipam":{"type":"static","addresses":[{"address":"10.99.0.7/24"}]}}`,
		head + `,"hostAddress":{"nodeName":"n","pool":["10.99.0.240/28"]},` + hostLocal + `}`,
		head + `,"mtu":1400,"mac":"52:54:00:00:00:42","spoofCheck":false,"portIsolation":true,"tap":{"owner":107,"group":107,"multiQueue":true},` + static + `,` + hostLocal + `}`,
		head + `,"hostAddress":{"disabled":true},` + hostLocal + `}`,
		head + `,` + static + `,"ipam":{"type":"dhcp"}}`,                                          // no such IPAM here
		head + `,"mtu":9000,` + static + `}`,                                                      // above the bridge's MTU
		`{"cniVersion":"0.3.1","name":"fz","type":"tapbridge-cni","bridge":"hp0",` + static + `}`, // not a bridge
	}
}

// fuzzNode is the throwaway node of one fuzzing process: a host netns
// with the bridge and a peer, and a pod netns. It is made once per
// process and reused: making and destroying namespaces per input would
// flood the kernel's netns cleanup (rcu_barrier under the RTNL) and
// stall every other user of the machine.
type fuzzNode struct {
	node *harness.Node
	pod  harness.Netns
	base harness.State
}

var fuzzCurrent *fuzzNode // used by one goroutine at a time (the fuzz loop)

func getFuzzNode(t *testing.T) *fuzzNode {
	if fuzzCurrent != nil {
		return fuzzCurrent
	}
	node, err := harness.NewNode(harness.RunID(fmt.Sprintf("tbf%d", os.Getpid())))
	if err != nil {
		t.Fatal(err)
	}
	fn := &fuzzNode{node: node}
	if fn.pod, err = harness.NewNetns(node.ID + "-pod"); err != nil {
		_ = node.Close()
		t.Fatal(err)
	}
	if fn.base, err = harness.Read(harness.Scope{Host: node.Host, Bridges: []string{harness.BridgeName}, Pods: []harness.Netns{fn.pod}}); err != nil {
		fn.close()
		t.Fatal(err)
	}
	fuzzCurrent = fn
	return fn
}

func (fn *fuzzNode) close() {
	_ = fn.pod.Delete()
	_ = fn.node.Close()
	if fuzzCurrent == fn {
		fuzzCurrent = nil
	}
}

// FuzzAddDel: fuzzed configuration bytes and a fixed valid environment,
// plugin.Add then plugin.Del in-process inside a throwaway node. Whatever
// ADD did, a failed ADD leaves the node as it was, a successful ADD is
// undone by DEL, and DEL after a successful ADD succeeds: after every
// input the node's snapshot equals its baseline. Side effects are
// confined to the node and to per-input temp dirs: dataDir, logFile and
// the IPAM's dataDir and name are overridden, and CNI_PATH holds only
// host-local and static. A failing input gets a fresh node, so that
// minimisation does not run on a dirty one.
//
//	go test -run '^$' -fuzz '^FuzzAddDel$' -fuzztime 30s ./internal/plugin
func FuzzAddDel(f *testing.F) {
	harness.RequireRoot(f)
	if err := harness.EnsureUpstream(); err != nil {
		f.Fatal(err)
	}
	sweepDeadFuzzNetns()
	f.Cleanup(func() {
		if fuzzCurrent != nil {
			fuzzCurrent.close()
		}
	})
	cniPath := f.TempDir()
	for _, ipam := range []string{"host-local", "static"} {
		if err := os.Symlink(filepath.Join(harness.CNIBinDir(), ipam), filepath.Join(cniPath, ipam)); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range fuzzAddDelSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stdin []byte) {
		const cid, ifname, args = "fuzz-cid", "pod0f0zz", "IgnoreUnknown=1;K8S_POD_NAME=fuzz"
		n, err := config.Parse(stdin, config.Env{ContainerID: cid, IfName: ifname, Args: args, Hostname: "n"})
		if err != nil {
			return // FuzzParse covers refusals; nothing was touched
		}
		dir := t.TempDir()
		if !confine(n, dir) {
			return
		}
		fn := getFuzzNode(t)
		dirs := []string{n.DataDir, filepath.Join(dir, "ipam")}
		fail := func(format string, a ...any) {
			fn.close() // the next input gets a clean node
			t.Fatalf(format, a...)
		}
		changed := func() string {
			s, err := harness.Read(harness.Scope{Host: fn.node.Host, Bridges: []string{harness.BridgeName}, Pods: []harness.Netns{fn.pod}, StateDir: dirs[0], IPAMDir: dirs[1]})
			if err != nil {
				fail("snapshot: %v", err)
			}
			return fn.base.Diff(s)
		}
		p := &plugin.Plugin{
			Net: n,
			Env: plugin.Env{ContainerID: cid, Netns: fn.pod.Path(), IfName: ifname, Args: args, Path: cniPath},
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		}
		var addErr, delErr error
		var names []string
		_ = fn.node.Host.Do(func() error {
			res, err := p.Add(context.Background())
			if addErr = err; err == nil {
				for _, i := range res.Interfaces {
					names = append(names, i.Name)
				}
			}
			return nil
		})
		for _, name := range names {
			if len(name) == 0 || len(name) > 15 {
				fail("result interface name %q", name)
			}
		}
		if addErr != nil {
			if d := changed(); d != "" {
				fail("failed ADD (%v) left something behind:\n%s", addErr, d)
			}
		}
		_ = fn.node.Host.Do(func() error {
			delErr = p.Del(context.Background())
			return nil
		})
		t.Logf("ADD: %v; DEL: %v", addErr, delErr)
		if addErr == nil && delErr != nil {
			fail("DEL after a successful ADD: %v", delErr)
		}
		if d := changed(); d != "" {
			fail("ADD (err %v) then DEL (err %v) left something behind:\n%s", addErr, delErr, d)
		}
	})
}

// confine keeps a fuzzed Net's side effects inside dir and the node, and
// bounds its waits. It reports false for a config the IPAM copy cannot
// be rewritten for (never the case after a successful Parse).
func confine(n *config.Net, dir string) bool {
	n.DataDir, n.LogFile = filepath.Join(dir, "state"), ""
	n.LockTimeout = min(n.LockTimeout, 5*time.Second)
	n.IPAMTimeout = min(n.IPAMTimeout, 5*time.Second)
	if n.IPAMType == "" {
		return true
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(n.Bytes))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return false
	}
	ipam, ok := doc["ipam"].(map[string]any)
	if !ok {
		return false
	}
	ipam["dataDir"] = filepath.Join(dir, "ipam")
	doc["name"] = "fuzznet" // host-local keeps its leases in dataDir/<name>
	b, err := json.Marshal(doc)
	if err != nil || strings.Contains(string(b), "\x00") {
		return false
	}
	n.Bytes = b
	return true
}
