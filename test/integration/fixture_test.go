package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// fixture is one sandbox node with its own state, IPAM and cache dirs.
type fixture struct {
	t    *testing.T
	node *harness.Node
	dir  string
	pods []harness.Netns
	seq  int
	rec  *harness.Recorder // set by recorder(): an IPAM that logs its calls
}

// recorder makes IPAM calls visible: configs built with withRecorder use it.
func (f *fixture) recorder() *harness.Recorder {
	f.t.Helper()
	if f.rec == nil {
		r, err := harness.NewRecorder(f.t.TempDir())
		if err != nil {
			f.t.Fatal(err)
		}
		f.rec = r
	}
	return f.rec
}

// withRecorder switches the config's IPAM to the recorder.
func withRecorder(c map[string]any) { c["ipam"].(map[string]any)["type"] = "recorder" }

// paths is CNI_PATH: the plugin under test, the upstream plugins and, if
// made, the recorder.
func (f *fixture) paths(pluginDir string) []string {
	p := []string{pluginDir, harness.CNIBinDir()}
	if f.rec != nil {
		p = append(p, f.rec.Dir)
	}
	return p
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	node, err := harness.NewNode(harness.RunID("tbt"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, node: node, dir: t.TempDir()}
	t.Cleanup(func() {
		for _, p := range f.pods {
			_ = p.Delete()
		}
		if err := node.Close(); err != nil {
			t.Error(err)
		}
	})
	return f
}

func (f *fixture) stateDir() string { return filepath.Join(f.dir, "state") }
func (f *fixture) ipamDir() string  { return filepath.Join(f.dir, "ipam") }

// pod makes a fresh pod netns, removed at cleanup.
func (f *fixture) pod() harness.Netns {
	f.t.Helper()
	f.seq++
	p, err := harness.NewNetns(f.node.ID + "-pod" + strconv.Itoa(f.seq))
	if err != nil {
		f.t.Fatal(err)
	}
	f.pods = append(f.pods, p)
	return p
}

// conf is the default network config; mods edit the decoded map.
func (f *fixture) conf(version string, mods ...func(map[string]any)) []byte {
	c := map[string]any{
		"cniVersion": version, "name": "vmnet", "type": "tapbridge-cni",
		"bridge": harness.BridgeName,
		"tap":    map[string]any{"owner": 107, "group": 107},
		"hostAddress": map[string]any{
			"nodeName": "node-a",
			"static":   map[string]any{"node-a": []string{"10.77.0.250/24"}},
		},
		"dataDir": f.stateDir(), "logFile": filepath.Join(f.dir, "plugin.log"), "logLevel": "debug",
		"ipam": map[string]any{
			"type": "host-local", "dataDir": f.ipamDir(),
			"ranges": [][]map[string]any{{{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.10", "rangeEnd": "10.77.0.200"}}},
		},
	}
	for _, m := range mods {
		m(c)
	}
	b, err := json.Marshal(c)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// exec runs the release binary in the node's host netns.
func (f *fixture) exec(c harness.Call) harness.Outcome {
	f.t.Helper()
	if c.Binary == "" {
		c.Binary = filepath.Join(pluginDir, "tapbridge-cni")
	}
	if c.Path == "" {
		c.Path = strings.Join(f.paths(filepath.Dir(c.Binary)), ":")
	}
	var out harness.Outcome
	err := f.node.Host.Do(func() error {
		var err error
		out, err = c.Run()
		return err
	})
	if err != nil {
		f.t.Fatalf("%s: %v (stderr: %s)", c.Command, err, out.Stderr)
	}
	return out
}

// runtime is libcni as a container runtime uses it.
type runtime struct {
	f    *fixture
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
}

func (f *fixture) runtime(conf []byte) *runtime {
	f.t.Helper()
	var plugin map[string]any
	if err := json.Unmarshal(conf, &plugin); err != nil {
		f.t.Fatal(err)
	}
	list := map[string]any{"cniVersion": plugin["cniVersion"], "name": plugin["name"], "plugins": []any{plugin}}
	b, _ := json.Marshal(list)
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		f.t.Fatal(err)
	}
	cache := filepath.Join(f.dir, "cache")
	return &runtime{f: f, cni: libcni.NewCNIConfigWithCacheDir(f.paths(pluginDir), cache, nil), list: l}
}

func rtConf(cid string, pod harness.Netns, ifname string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: cid, NetNS: pod.Path(), IfName: ifname}
}

func (r *runtime) add(rt *libcni.RuntimeConf) (*current.Result, error) {
	var res types.Result
	err := r.f.node.Host.Do(func() error {
		var err error
		res, err = r.cni.AddNetworkList(context.Background(), r.list, rt)
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (r *runtime) check(rt *libcni.RuntimeConf) error {
	return r.f.node.Host.Do(func() error { return r.cni.CheckNetworkList(context.Background(), r.list, rt) })
}

func (r *runtime) del(rt *libcni.RuntimeConf) error {
	return r.f.node.Host.Do(func() error { return r.cni.DelNetworkList(context.Background(), r.list, rt) })
}

func (r *runtime) gc(args *libcni.GCArgs) error {
	return r.f.node.Host.Do(func() error { return r.cni.GCNetworkList(context.Background(), r.list, args) })
}

func (r *runtime) status() error {
	return r.f.node.Host.Do(func() error { return r.cni.GetStatusNetworkList(context.Background(), r.list) })
}

func (f *fixture) deletedPods() []string {
	var gone []string
	for _, p := range f.pods {
		if _, err := os.Stat(p.Path()); err != nil {
			gone = append(gone, p.Name)
		}
	}
	return gone
}

// snapshot takes the leak-check snapshot of the node, its pods and dirs.
func (f *fixture) snapshot() harness.Snapshot {
	f.t.Helper()
	var live []harness.Netns
	for _, p := range f.pods {
		if _, err := os.Stat(p.Path()); err == nil {
			live = append(live, p)
		}
	}
	s, err := harness.Take(f.node.Host, live, f.stateDir(), f.ipamDir())
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

// expectClean fails the test if the node differs from before. Pods the
// test deleted on purpose are left out of the comparison.
func (f *fixture) expectClean(before harness.Snapshot) {
	f.t.Helper()
	before = before.Without(f.deletedPods()...)
	after := f.snapshot()
	for k, links := range after {
		// A pod made after the "before" snapshot must hold only loopback.
		if _, known := before[k]; !known && strings.HasPrefix(k, "pod ") && len(links) == 1 && strings.HasPrefix(links[0], "lo(") {
			delete(after, k)
		}
	}
	if d := before.Diff(after); d != "" {
		f.t.Errorf("node not left as it was:\n%s", d)
	}
}
