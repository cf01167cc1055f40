package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// fixture is one sandbox node with its own state, IPAM and cache dirs.
// newPod, call and start are safe from any goroutine.
type fixture struct {
	t       *testing.T
	node    *harness.Node
	dir     string
	bridges []string // every bridge of the node the checks look at
	mu      sync.Mutex
	made    []harness.Netns   // pod netns made so far; guarded by mu
	seq     int               // guarded by mu
	rec     *harness.Recorder // set by recorder(): an IPAM that logs its calls
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
	f := &fixture{t: t, node: node, dir: t.TempDir(), bridges: []string{harness.BridgeName}}
	t.Cleanup(func() {
		f.keepLog()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, p := range f.made {
			if err := p.Delete(); err != nil {
				t.Error(err)
			}
		}
		if err := node.Close(); err != nil {
			t.Error(err)
		}
	})
	return f
}

// keepLog saves the plugin's log of a failed test, which t.TempDir
// would remove, and says where.
func (f *fixture) keepLog() {
	if !f.t.Failed() {
		return
	}
	data, err := os.ReadFile(filepath.Join(f.dir, "plugin.log"))
	if err != nil {
		return
	}
	name := filepath.Join(os.TempDir(), strings.NewReplacer("/", "_", " ", "_").Replace(f.t.Name())+"-"+f.node.ID+".log")
	if err := os.WriteFile(name, data, 0o644); err == nil {
		f.t.Logf("plugin log kept in %s", name)
	}
}

func (f *fixture) stateDir() string { return filepath.Join(f.dir, "state") }
func (f *fixture) ipamDir() string  { return filepath.Join(f.dir, "ipam") }

// newPod makes a fresh pod netns from any goroutine; removed at cleanup.
func (f *fixture) newPod() (harness.Netns, error) {
	f.mu.Lock()
	f.seq++
	name := f.node.ID + "-pod" + strconv.Itoa(f.seq)
	f.mu.Unlock()
	p, err := harness.NewNetns(name)
	if err != nil {
		return p, err
	}
	f.mu.Lock()
	f.made = append(f.made, p)
	f.mu.Unlock()
	return p, nil
}

// pod makes a fresh pod netns (from the test goroutine).
func (f *fixture) pod() harness.Netns {
	f.t.Helper()
	p, err := f.newPod()
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

// pods makes n pod netns up front (from the test goroutine).
func (f *fixture) pods(n int) []harness.Netns {
	f.t.Helper()
	out := make([]harness.Netns, n)
	for i := range out {
		out[i] = f.pod()
	}
	return out
}

// addBridge makes another admin bridge in the node's host netns.
func (f *fixture) addBridge(name string) {
	f.t.Helper()
	err := f.node.Host.Do(func() error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge %s: %w", name, err)
		}
		return netlink.LinkSetUp(br)
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.bridges = append(f.bridges, name)
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

// read reads the node's state, looking into pods.
func (f *fixture) read(pods []harness.Netns) harness.State {
	f.t.Helper()
	s, err := harness.Read(harness.Scope{Host: f.node.Host, Bridges: f.bridges, Pods: pods, StateDir: f.stateDir(), IPAMDir: f.ipamDir()})
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

// snapshot reads the node with every pod the fixture made.
func (f *fixture) snapshot() harness.State {
	f.t.Helper()
	f.mu.Lock()
	pods := append([]harness.Netns(nil), f.made...)
	f.mu.Unlock()
	return f.read(pods)
}

// expectClean fails the test if the node differs from before. Pods the
// test deleted on purpose are left out of the comparison; a pod made
// after before must hold only loopback.
func (f *fixture) expectClean(before harness.State) {
	f.t.Helper()
	after := f.snapshot()
	var gone []string
	for name := range before.Pods {
		if _, ok := after.Pods[name]; !ok {
			gone = append(gone, name)
		}
	}
	before = before.Without(gone...)
	for name, k := range after.Pods {
		if _, known := before.Pods[name]; !known && k.OnlyLoopback() {
			after = after.Without(name)
		}
	}
	if d := before.Diff(after); d != "" {
		f.t.Errorf("node not left as it was:\n%s", d)
	}
}

// expectLive fails the test unless the node holds exactly the live
// attachments (harness.State.Live). pods are the pod netns to look into
// besides those of live: their devices must be exactly those of the live
// attachments in them, else only lo.
func (f *fixture) expectLive(live []harness.Attachment, pods []harness.Netns) {
	f.t.Helper()
	if err := f.liveErr(live, pods); err != nil {
		f.t.Fatal(err)
	}
}

// liveErr is expectLive for callers that must not stop the test at once.
func (f *fixture) liveErr(live []harness.Attachment, pods []harness.Netns) error {
	pods = append([]harness.Netns(nil), pods...)
	for _, a := range live {
		if !slices.ContainsFunc(pods, func(p harness.Netns) bool { return p.Name == a.Pod.Name }) {
			pods = append(pods, a.Pod)
		}
	}
	s, err := harness.Read(harness.Scope{Host: f.node.Host, Bridges: f.bridges, Pods: pods, StateDir: f.stateDir(), IPAMDir: f.ipamDir()})
	if err != nil {
		return err
	}
	return s.Live(live)
}

// stateSane checks what must hold in the state dir at any instant, even
// right after a crash (harness.StateDir.Sane).
func (f *fixture) stateSane() error {
	s, err := harness.ReadStateDir(f.stateDir())
	if err != nil {
		return err
	}
	return s.Sane()
}

// watchHostAddrs watches the host addresses of bridge while plugins run
// (harness.WatchHostAddrs).
func (f *fixture) watchHostAddrs(bridge string, hostAddrs ...string) (stop func() (int, []error)) {
	f.t.Helper()
	return harness.WatchHostAddrs(f.t, f.node.Host, f.stateDir(), bridge, hostAddrs...)
}
