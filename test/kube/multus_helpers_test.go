package kube_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/tapbridge/tapbridge-cni/test/harness"
	"github.com/tapbridge/tapbridge-cni/test/kube"
)

var nadGVR = schema.GroupVersionResource{Group: "k8s.cni.cncf.io", Version: "v1", Resource: "network-attachment-definitions"}

// mnode is a sandbox node whose runtime execs Multus: thin (the multus
// binary does everything) or thick (the multus-shim posts each call to the
// node's multus-daemon, which execs the plugins). The node's host netns
// (bridge br-test) is joined to the API server, and a directory is the
// node's own /var/lib/cni and /var/log.
type mnode struct {
	name   string // its hostname (tapbridge-ipam's nodeName)
	mode   multusMode
	hn     *harness.Node
	dir    string
	bin    string // CNI_PATH, and Multus' binDir
	cni    *libcni.CNIConfig
	conf   *libcni.NetworkConfigList
	daemon *multusDaemon // thick only
}

// multusMode is how Multus is deployed on a node.
type multusMode string

const (
	thin  multusMode = "thin"  // cmd/multus, the plugin the runtime execs
	thick multusMode = "thick" // cmd/multus-shim execed, cmd/multus-daemon running
)

// eachMode runs test once per Multus mode, as subtests thin and thick.
func eachMode(t *testing.T, test func(t *testing.T, mode multusMode)) {
	for _, m := range []multusMode{thin, thick} {
		t.Run(string(m), func(t *testing.T) { test(t, m) })
	}
}

var mnodeSeq atomic.Int32

// The runtime execs this instead of multus: Multus and every plugin it
// execs then see the node's hostname and the node's /var/lib/cni and
// /var/log (private mounts, gone with the process), as on a real node,
// so the NADs keep the project's paths and no node shares a state dir.
// /var is a tmpfs of the process's own, with /var/run pointing at /run
// (CNI_NETNS is under /var/run/netns): the machine need not have a
// /var/lib/cni to mount on, and nothing is made in its /var.
const multusWrapper = `#!/bin/sh
exec unshare --mount --uts --propagation private /bin/sh -ec 'hostname "$1"
mount -t tmpfs -o mode=755 tapbridge-node-var /var
mkdir -p /var/lib/cni /var/log
ln -s /run /var/run
mount --bind "$2/var-lib-cni" /var/lib/cni
mount --bind "$2/var-log" /var/log
exec "$3"' sh %s %s %s
`

func newMultusNode(t *testing.T, mode multusMode, name string) *mnode {
	t.Helper()
	guardHostLog(t)
	n := &mnode{name: name, mode: mode, dir: t.TempDir()}
	hn, err := harness.NewNode(fmt.Sprintf("%s-m%d", runID, mnodeSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	n.hn = hn
	t.Cleanup(func() {
		if err := hn.Close(); err != nil {
			t.Error(err)
		}
	})
	if _, err := cluster.JoinNode(hn.Host, 150+int(mnodeSeq.Load())%50); err != nil {
		t.Fatal(err)
	}
	n.bin = filepath.Join(n.dir, "bin")
	for _, d := range []string{n.bin, n.varLib(), filepath.Join(n.dir, "var-log"), n.confDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"tapbridge-cni": cniBin, "tapbridge-ipam": ipamBin, "loopback": kube.MultusBin("loopback"),
		"host-local": filepath.Join(harness.RepoRoot(), "build", "cni-bin", "host-local"),
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(n.bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			n.dumpLogs(t)
		}
	})
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{n.bin}, filepath.Join(n.dir, "runtime-cache"), nil)
	if mode == thick {
		n.conf = n.startThick(t)
		return n
	}
	wrapper := fmt.Sprintf(multusWrapper, name, n.dir, kube.MultusBin("multus"))
	if err := os.WriteFile(filepath.Join(n.bin, "multus"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	n.conf, err = libcni.ConfListFromBytes(n.multusConf())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *mnode) varLib() string   { return filepath.Join(n.dir, "var-lib-cni") }
func (n *mnode) confDir() string  { return filepath.Join(n.dir, "multus-net.d") }
func (n *mnode) stateDir() string { return filepath.Join(n.varLib(), "tapbridge") }

// multusLog is the node's Multus log: the /var/log/multus.log of thin's
// wrapper and of the daemon's mount namespace, and the logFile thick's
// config gives multus-shim, which the runtime execs with no wrapper.
func (n *mnode) multusLog() string { return filepath.Join(n.dir, "var-log", "multus.log") }

// hostMultusLog is the path Multus' deployments log to: the machine's
// own, which no Multus of the tier may write.
const hostMultusLog = "/var/log/multus.log"

// guardHostLog fails the test if the machine's /var/log/multus.log was
// created or written while it ran (a Multus binary run outside a node's
// mount namespace with that path); one the test created is removed.
func guardHostLog(t *testing.T) {
	t.Helper()
	before, errBefore := os.Stat(hostMultusLog)
	t.Cleanup(func() {
		after, err := os.Stat(hostMultusLog)
		switch {
		case err != nil:
		case errBefore != nil:
			t.Errorf("%s was created during the test: a Multus binary logged outside the node's directories", hostMultusLog)
			_ = os.Remove(hostMultusLog)
		case after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()):
			t.Errorf("%s was written during the test (%d bytes, then %d)", hostMultusLog, before.Size(), after.Size())
		}
	})
}

// multusConf is Multus thin's conflist as a cluster's installer writes
// it: a kubeconfig for the API server, and a cluster network kept as
// simple as it gets (loopback), since only the secondary networks matter.
func (n *mnode) multusConf() []byte {
	return fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"multus-cni-network","plugins":[{"type":"multus",
		"kubeconfig":%q,"binDir":%q,"confDir":%q,"logFile":"/var/log/multus.log","logLevel":"debug","logToStderr":false,
		"delegates":[{"cniVersion":"1.1.0","name":"cluster","plugins":[{"type":"loopback"}]}]}]}`,
		cluster.Admin, n.bin, n.confDir())
}

func (n *mnode) dumpLogs(t *testing.T) {
	for _, f := range []string{"var-log/multus.log", "var-log/tapbridge-cni.log", "multus-daemon.log"} {
		b, err := os.ReadFile(filepath.Join(n.dir, f))
		if err == nil {
			lines := strings.Split(string(b), "\n")
			t.Logf("--- %s of %s (last lines)\n%s", f, n.name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	}
}

// scope is what a leak check reads on this node, for these pod netns.
func (n *mnode) scope(pods ...harness.Netns) harness.Scope {
	return harness.Scope{Host: n.hn.Host, Bridges: []string{harness.BridgeName}, Pods: pods,
		StateDir: n.stateDir(), IPAMDir: filepath.Join(n.varLib(), "networks")}
}

func (n *mnode) read(t *testing.T, pods ...harness.Netns) harness.State {
	t.Helper()
	s, err := harness.Read(n.scope(pods...))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sandbox is a pod on a node as a runtime sees it: its netns, and the
// CNI_ARGS a runtime passes (the pod's name, namespace and UID).
type sandbox struct {
	n   *mnode
	pod *corev1.Pod
	ns  harness.Netns
	rt  *libcni.RuntimeConf
}

var sandboxSeq atomic.Int32

func (n *mnode) sandbox(t *testing.T, pod *corev1.Pod) *sandbox {
	t.Helper()
	i := sandboxSeq.Add(1)
	s := &sandbox{n: n, pod: pod, ns: harness.Netns{Name: fmt.Sprintf("%s-s%d", runID, i)}}
	t.Cleanup(func() { _ = s.ns.Delete() })
	if _, err := harness.NewNetns(s.ns.Name); err != nil {
		t.Fatal(err)
	}
	cid := fmt.Sprintf("%064x", sha256.Sum256([]byte(s.ns.Name)))
	s.rt = &libcni.RuntimeConf{ContainerID: cid, NetNS: s.ns.Path(), IfName: "eth0", Args: [][2]string{
		{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", pod.Namespace}, {"K8S_POD_NAME", pod.Name},
		{"K8S_POD_INFRA_CONTAINER_ID", cid}, {"K8S_POD_UID", string(pod.UID)},
	}}
	return s
}

func (s *sandbox) do(fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return s.n.hn.Host.Do(func() error { return fn(ctx) })
}

// add runs the runtime's ADD: libcni execs Multus, Multus execs the
// cluster network and then each network of the pod's annotation.
func (s *sandbox) add() (types.Result, error) {
	var res types.Result
	err := s.do(func(ctx context.Context) error {
		var err error
		res, err = s.n.cni.AddNetworkList(ctx, s.n.conf, s.rt)
		return err
	})
	return res, err
}

func (s *sandbox) mustAdd(t *testing.T) {
	t.Helper()
	if _, err := s.add(); err != nil {
		t.Fatalf("ADD through Multus of pod %s: %v", s.pod.Name, err)
	}
}

// del runs the runtime's DEL. multus-shim answers every DEL with success
// (CNI says DEL should not fail) and only logs the daemon's error, so in
// thick mode the error is read from the node's Multus log.
func (s *sandbox) del() error {
	var from int64
	if fi, err := os.Stat(s.n.multusLog()); err == nil {
		from = fi.Size()
	}
	if err := s.do(func(ctx context.Context) error { return s.n.cni.DelNetworkList(ctx, s.n.conf, s.rt) }); err != nil {
		return err
	}
	if s.n.mode != thick {
		return nil
	}
	return s.n.shimDelError(from)
}

// shimDelError is the error multus-shim logged ("CmdDel (shim): …") in
// the node's Multus log past offset from, nil if none. The daemon logs
// every request there too, so a log that is missing after a DEL is an
// error: the check would see nothing.
func (n *mnode) shimDelError(from int64) error {
	b, err := os.ReadFile(n.multusLog())
	if err != nil {
		return fmt.Errorf("read the node's Multus log for the DEL's outcome: %w", err)
	}
	if int64(len(b)) < from {
		from = 0 // rotated
	}
	_, msg, found := bytes.Cut(b[from:], []byte("CmdDel (shim): "))
	if !found {
		return nil
	}
	if len(msg) > 4000 {
		msg = msg[:4000]
	}
	return fmt.Errorf("DEL through multus-shim failed (the shim answered success and logged): %s", bytes.TrimSpace(msg))
}

func (s *sandbox) mustDel(t *testing.T) {
	t.Helper()
	if err := s.del(); err != nil {
		t.Fatalf("DEL through Multus of pod %s: %v", s.pod.Name, err)
	}
}

// podIface is KubeVirt's pod interface name for a VM network:
// "pod" and the first 11 hex digits of the SHA-256 of the network's name
// (namescheme.GenerateHashedInterfaceName).
func podIface(vmNetwork string) string {
	return fmt.Sprintf("pod%x", sha256.Sum256([]byte(vmNetwork)))[:14]
}

func tapOf(podIf string) string { return "tap" + strings.TrimPrefix(podIf, "pod") }

// element is one network-selection element of a virt-launcher pod.
type element struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	Interface string `json:"interface,omitempty"`
	MAC       string `json:"mac,omitempty"`
	Claim     string `json:"ipam-claim-reference,omitempty"`
}

func annotation(elems ...element) string {
	b, _ := json.Marshal(elems)
	return string(b)
}

// netStatus is one entry of Multus' network-status annotation.
type netStatus struct {
	Name      string   `json:"name"`
	Interface string   `json:"interface"`
	IPs       []string `json:"ips"`
	MAC       string   `json:"mac"`
	Default   bool     `json:"default"`
}

func networkStatus(t *testing.T, p *corev1.Pod) []netStatus {
	t.Helper()
	cs, _ := clients(t)
	got, err := cs.CoreV1().Pods(p.Namespace).Get(ctxT(t), p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw := got.Annotations["k8s.v1.cni.cncf.io/network-status"]
	var out []netStatus
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatalf("network-status %q: %v", raw, err)
	}
	t.Logf("network-status of %s: %s", p.Name, raw)
	return out
}

// kubevirtLookup reads network-status as KubeVirt does
// (multus.NetworkStatusesByPodIfaceName): entries by interface name, the
// VM network's found under its pod interface name; order plays no part.
func kubevirtLookup(statuses []netStatus, podIf string) (netStatus, bool) {
	byIface := map[string]netStatus{}
	for _, s := range statuses {
		byIface[s.Interface] = s
	}
	s, ok := byIface[podIf]
	return s, ok
}

// createNAD creates, in the pods' namespace, the NAD of a conf/k8s file
// with its config adjusted for the sandbox by adjust (bridge, paths), and
// renamed (object and config) when rename is given.
func createNAD(t *testing.T, file, name string, adjust func(plugin map[string]any), rename ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "conf", "k8s", file))
	if err != nil {
		t.Fatal(err)
	}
	var u unstructured.Unstructured
	for _, doc := range strings.Split(string(b), "\n---\n") {
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if u.GetName() == name {
			break
		}
	}
	if u.GetName() != name {
		t.Fatalf("%s has no NAD %s", file, name)
	}
	u.SetNamespace(podNamespace)
	if len(rename) > 0 {
		name = rename[0]
		u.SetName(name)
	}
	if conf, ok, _ := unstructured.NestedString(u.Object, "spec", "config"); ok && adjust != nil {
		var c map[string]any
		if err := json.Unmarshal([]byte(conf), &c); err != nil {
			t.Fatalf("%s config: %v", file, err)
		}
		c["name"] = name
		plugins, _ := c["plugins"].([]any)
		adjust(plugins[0].(map[string]any))
		out, _ := json.Marshal(c)
		if err := unstructured.SetNestedField(u.Object, string(out), "spec", "config"); err != nil {
			t.Fatal(err)
		}
	}
	_, dyn := clients(t)
	if _, err := dyn.Resource(nadGVR).Namespace(podNamespace).Create(ctxT(t), &u, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
		t.Fatalf("create NAD %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = dyn.Resource(nadGVR).Namespace(podNamespace).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// sandboxed is the adjustment every NAD gets: the sandbox's bridge, and
// the kubeconfig the DaemonSet would write, where the tier keeps it.
func sandboxed(plugin map[string]any) {
	plugin["bridge"] = harness.BridgeName
	if ipam, ok := plugin["ipam"].(map[string]any); ok && ipam["type"] == "tapbridge-ipam" {
		ipam["kubeconfig"] = saConfig
	}
}

// installNodeConf puts a conf/cni file into the node's Multus confDir,
// where Multus reads a NAD without config (mode 1), adjusted like a NAD.
func (n *mnode) installNodeConf(t *testing.T, file string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "conf", "cni", file))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	sandboxed(c["plugins"].([]any)[0].(map[string]any))
	out, _ := json.Marshal(c)
	if err := os.WriteFile(filepath.Join(n.confDir(), filepath.Base(file)), out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// virtLauncher creates a pod as KubeVirt creates a virt-launcher pod:
// one network-selection element per VM network.
func virtLauncher(t *testing.T, name string, elems ...element) *corev1.Pod {
	t.Helper()
	p := makePod(t, name, annotation(elems...))
	t.Cleanup(func() { deletePod(t, p) })
	return p
}

// allocCounts is the number of IPAllocations of each network, over all
// the tier's networks, so a leak in any of them shows.
func allocCounts(t *testing.T) map[string]int {
	t.Helper()
	_, dyn := clients(t)
	list, err := dyn.Resource(allocGVR).List(ctxT(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, it := range list.Items {
		name, _, _ := unstructured.NestedString(it.Object, "spec", "network")
		out[name]++
	}
	return out
}

// withAllocs is counts with n more IPAllocations of network.
func withAllocs(counts map[string]int, network string, n int) map[string]int {
	out := maps.Clone(counts)
	out[network] += n
	if out[network] == 0 {
		delete(out, network)
	}
	return out
}

// expectAllocs checks the IPAllocations of every network against want.
func expectAllocs(t *testing.T, when string, want map[string]int) {
	t.Helper()
	if got := allocCounts(t); !maps.Equal(got, want) {
		t.Fatalf("IPAllocations by network %s: %v, want %v", when, got, want)
	}
}
