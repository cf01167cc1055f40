package integration

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// The project's own conflist, run by real callers: cnitool on the libcni
// that containerd 1.6 vendors (before CNI 1.1, it reads only cniVersion
// and refuses 1.1.0) and on the project's libcni (it reads cniVersions and
// takes 1.1.0, so GC and STATUS reach the plugin). The file is adjusted
// only for the sandbox: bridge, state and IPAM dirs, no log file, a
// network name of its own. ADD, CHECK and DEL (and STATUS, and ADD then
// GC, where the caller has them) leave the node as it was.
func TestConfFileWithRealCallers(t *testing.T) {
	for _, v := range harness.CNIToolVersions {
		t.Run("cnitool "+v, func(t *testing.T) {
			tool, err := harness.CNITool(v)
			if err != nil {
				t.Fatal(err)
			}
			f := newFixture(t)
			pod := f.pods(1)[0]
			name, netconf := f.sandboxConflist("conf/cni/node1/vmnet3.conflist")
			cached := filepath.Join("/var/lib/cni/results", name+"-*") // libcni's default cache, the machine's
			t.Cleanup(func() {                                         // what a failed run leaves; the success path checks it is empty
				leftovers, _ := filepath.Glob(cached)
				for _, l := range leftovers {
					os.Remove(l)
				}
			})
			before := f.snapshot()
			c := cnitool{f: f, path: tool, netconf: netconf}
			want := "1.0.0"
			if v >= "v1.2" {
				want = "1.1.0"
			}
			if got := c.result(t, "add", name, pod.Path()); got != want {
				t.Fatalf("cnitool %s ran the conflist at cniVersion %s, want %s", v, got, want)
			}
			c.must(t, "check", name, pod.Path())
			if want == "1.1.0" {
				c.must(t, "status", name, pod.Path())
			}
			c.must(t, "del", name, pod.Path())
			if want == "1.1.0" { // cnitool gc DELs what libcni's cache knows, then sends GC
				c.result(t, "add", name, pod.Path())
				c.must(t, "gc", name, pod.Path())
			}
			f.expectClean(before)
			if leftovers, _ := filepath.Glob(cached); len(leftovers) > 0 {
				t.Errorf("libcni's cache still holds %v", leftovers)
			}
		})
	}
}

// sandboxConflist writes the repository's conflist at rel, adjusted for
// this node, into a directory of its own, and returns its network name
// and the directory (NETCONFPATH).
func (f *fixture) sandboxConflist(rel string) (string, string) {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), rel))
	if err != nil {
		f.t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(b, &list); err != nil {
		f.t.Fatalf("%s: %v", rel, err)
	}
	name := list["name"].(string) + "-" + f.node.ID
	list["name"] = name
	for _, p := range list["plugins"].([]any) {
		plugin := p.(map[string]any)
		if plugin["type"] != "tapbridge-cni" {
			continue
		}
		plugin["bridge"], plugin["dataDir"] = harness.BridgeName, f.stateDir()
		delete(plugin, "logFile")
		plugin["ipam"].(map[string]any)["dataDir"] = f.ipamDir()
	}
	out, _ := json.MarshalIndent(list, "", "  ")
	dir := f.t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name+".conflist"), out, 0o600); err != nil {
		f.t.Fatal(err)
	}
	return name, dir
}

// cnitool runs one cnitool build in the node's host netns, as a runtime
// would run the plugin.
type cnitool struct {
	f       *fixture
	path    string
	netconf string
}

func (c cnitool) run(args ...string) (stdout string, err error) {
	cmd := exec.Command(c.path, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "NETCONFPATH=" + c.netconf,
		"CNI_PATH=" + strings.Join(c.f.paths(pluginDir), ":"), "CNI_IFNAME=net1"}
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = c.f.node.Host.Do(cmd.Run)
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		err = errors.New(strings.TrimSpace(errOut.String() + " " + out.String()))
	}
	return out.String(), err
}

func (c cnitool) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.run(args...)
	if err != nil {
		t.Fatalf("cnitool %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// result runs a verb that prints a result and returns its cniVersion.
func (c cnitool) result(t *testing.T, args ...string) string {
	t.Helper()
	var res struct {
		CNIVersion string `json:"cniVersion"`
	}
	if out := c.must(t, args...); json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("cnitool %s printed no result: %q", strings.Join(args, " "), out)
	}
	return res.CNIVersion
}
