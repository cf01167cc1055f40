package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/tapbridge/tapbridge-cni/test/harness"
	"github.com/tapbridge/tapbridge-cni/test/kube"
)

// The cluster-ipam section (issue 14): tapbridge-ipam against whereabouts,
// both exec'd as CNI IPAM plugins from a simulated node, on one real API
// server started for the section, alternating batch by batch.

// whereaboutsVersion is what test/tools/whereabouts pins and
// scripts/deps/whereabouts.sh builds into build/whereabouts.
const whereaboutsVersion = "v0.9.2"

const (
	clusterRange   = "10.120.0.0/22" // both IPAMs hand out the same range
	clusterGateway = "10.120.0.1"
	clusterPodNS   = "bench"
	// whereabouts keeps its pools in the namespace of its kubeconfig's
	// context, kube-system when the context names none (ours do not).
	whereaboutsNS   = "kube-system"
	whereaboutsPool = "10.120.0.0-22" // IPPoolName of clusterRange without network_name
)

var (
	ipallocationsGVR = schema.GroupVersionResource{Group: "tapbridge.io", Version: "v1alpha1", Resource: "ipallocations"}
	ippoolsGVR       = schema.GroupVersionResource{Group: "whereabouts.cni.cncf.io", Version: "v1alpha1", Resource: "ippools"}
	reservationsGVR  = schema.GroupVersionResource{Group: "whereabouts.cni.cncf.io", Version: "v1alpha1", Resource: "overlappingrangeipreservations"}
)

func whereaboutsDir() string { return filepath.Join(harness.RepoRoot(), "build", "whereabouts") }

// clusterIPAMMissing says why the section cannot run on this machine, or "".
func clusterIPAMMissing() string {
	if err := kube.CheckBinaries(); err != nil {
		return err.Error()
	}
	v, err := os.ReadFile(filepath.Join(whereaboutsDir(), "whereabouts.version"))
	if err != nil || string(v) != whereaboutsVersion+"\n" {
		return fmt.Sprintf("build/whereabouts has no whereabouts %s (scripts/deps/whereabouts.sh builds it)", whereaboutsVersion)
	}
	if _, err := os.Stat(filepath.Join(whereaboutsDir(), "crds.version")); err != nil {
		return "build/whereabouts/crds is missing (scripts/deps/whereabouts.sh copies it)"
	}
	return ""
}

// clusterIPAM is the section's world: the API server, a node joined to
// it, the pods whose attachments the IPAMs allocate for.
type clusterIPAM struct {
	c        *kube.Cluster
	cs       *kubernetes.Clientset
	dyn      dynamic.Interface
	node     harness.Netns
	podNetns harness.Netns // CNI_NETNS of every call: an IPAM does not enter it
	pods     []*corev1.Pod
	close    func() error
}

// clusterIPAMKind is one of the two IPAMs.
type clusterIPAMKind struct {
	key, label, bin string
	conf            []byte
	// leftover counts what a batch left in the API after its DELs.
	leftover func(ctx context.Context) (int, error)
}

func (b *bench) ipamBinary() (string, error) {
	if b.opts.IPAM != "" {
		return filepath.Abs(b.opts.IPAM)
	}
	if b.opts.Plugin != "" {
		beside := filepath.Join(filepath.Dir(b.tapbridge), "tapbridge-ipam")
		if _, err := os.Stat(beside); err == nil {
			return beside, nil
		}
	}
	return buildRepoHelper(filepath.Join(b.dir, "bin"), "tapbridge-ipam", "./cmd/tapbridge-ipam")
}

// startClusterIPAM starts the API server, installs both IPAMs' CRDs,
// creates the pods and the node.
func (b *bench) startClusterIPAM(ctx context.Context, n int) (w *clusterIPAM, err error) {
	dir := filepath.Join(b.dir, "kube")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	t0 := time.Now()
	c, err := kube.Start(b.id, dir)
	if err != nil {
		return nil, err
	}
	var once sync.Once
	var closeErr error
	w = &clusterIPAM{c: c, close: func() error {
		once.Do(func() { closeErr = c.Close() })
		return closeErr
	}}
	if err := b.reg.onCleanup(w.close); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, w.close())
		}
	}()
	if w.cs, err = c.Clientset(); err != nil {
		return nil, err
	}
	if w.dyn, err = dynamic.NewForConfig(c.AdminConfig()); err != nil {
		return nil, err
	}
	if err := w.installCRDs(ctx); err != nil {
		return nil, err
	}
	if err := w.makePods(ctx, n); err != nil {
		return nil, err
	}
	if err := w.writeWhereaboutsFlatFile(); err != nil {
		return nil, err
	}
	if w.node, err = b.reg.newNetns(b.id + "-knode"); err != nil {
		return nil, err
	}
	if w.podNetns, err = b.reg.newNetns(b.id + "-kpod"); err != nil {
		return nil, err
	}
	if _, err := c.JoinNode(w.node, 1); err != nil {
		return nil, err
	}
	logf("cluster-ipam: API server %s up, CRDs installed, %d pods, in %s", kube.Version, n, time.Since(t0).Round(time.Millisecond))
	return w, nil
}

// installCRDs applies tapbridge-ipam's CRD (with the upstream NAD and
// IPAMClaim CRDs its STATUS asks for) and whereabouts' three, and waits
// until each one's objects are served.
func (w *clusterIPAM) installCRDs(ctx context.Context) error {
	files, err := kube.UpstreamCRDPaths()
	if err != nil {
		return err
	}
	files = append(files, filepath.Join(harness.RepoRoot(), "conf", "k8s", "ipam-crd.yaml"))
	wb, err := filepath.Glob(filepath.Join(whereaboutsDir(), "crds", "*.yaml"))
	if err != nil || len(wb) != 3 {
		return fmt.Errorf("build/whereabouts/crds: want 3 CRDs, found %v (%v)", wb, err)
	}
	var docs []byte
	for _, f := range append(files, wb...) {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		docs = append(append(docs, "---\n"...), b...)
	}
	if err := w.c.ApplyStrict(ctx, docs); err != nil {
		return err
	}
	if _, err := w.c.Kubectl(ctx, nil, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"); err != nil {
		return err
	}
	// Established comes a moment before a new CRD's objects are served.
	for _, gvr := range []schema.GroupVersionResource{ipallocationsGVR, ippoolsGVR, reservationsGVR} {
		var err error
		for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			if _, err = w.dyn.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1}); err == nil {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("%s not served: %w", gvr.Resource, err)
		}
	}
	return nil
}

// makePods creates the namespace and n pods. No kubelet runs: they stay
// Pending, which is all an IPAM reads (tapbridge-ipam GETs the pod of
// CNI_ARGS; whereabouts only records its name).
func (w *clusterIPAM) makePods(ctx context.Context, n int) error {
	core := w.cs.CoreV1()
	if _, err := core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: clusterPodNS}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", clusterPodNS, err)
	}
	// No controller-manager makes the default service account, and a pod needs it.
	if _, err := core.ServiceAccounts(clusterPodNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for i := range n {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("vm-%04d", i), Namespace: clusterPodNS},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "compute", Image: "example.invalid/virt-launcher"}}},
		}
		got, err := core.Pods(clusterPodNS).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create pod %s: %w", p.Name, err)
		}
		w.pods = append(w.pods, got)
	}
	return nil
}

// podArgs is CNI_ARGS as kubelet (through Multus) passes them for pod i.
func (w *clusterIPAM) podArgs(i int) string {
	p := w.pods[i]
	return fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_UID=%s", p.Namespace, p.Name, p.UID)
}

// whereaboutsFlatFile is where whereabouts' node-wide config goes: its
// DaemonSet's installer writes one (script/lib.sh), and an ADD without
// one fails ("config file not found"). Its content is the installer's.
func (w *clusterIPAM) whereaboutsFlatFile() string {
	return filepath.Join(w.c.Dir, "whereabouts.conf")
}

func (w *clusterIPAM) writeWhereaboutsFlatFile() error {
	b := fmt.Appendf(nil, `{"datastore":"kubernetes","kubernetes":{"kubeconfig":%q},"reconciler_cron_expression":"30 4 * * *"}`, w.c.Admin)
	return os.WriteFile(w.whereaboutsFlatFile(), b, 0o600)
}

// kinds are the two IPAMs with their configs: the same range, a network
// name each, the admin kubeconfig for both (same authentication path),
// everything else at its default.
func (w *clusterIPAM) kinds(tbBin string) []clusterIPAMKind {
	tb := clusterIPAMKind{key: "tapbridge-ipam", label: "tapbridge-ipam", bin: tbBin,
		conf: fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"bench-tb","ipam":{"type":"tapbridge-ipam","kubeconfig":%q,"nodeName":"bench-node","timeout":"30s","ranges":[[{"subnet":%q,"gateway":%q}]]}}`,
			w.c.Admin, clusterRange, clusterGateway),
		leftover: func(ctx context.Context) (int, error) {
			l, err := w.dyn.Resource(ipallocationsGVR).List(ctx, metav1.ListOptions{})
			if err != nil {
				return 0, err
			}
			return len(l.Items), nil
		}}
	wb := clusterIPAMKind{key: "whereabouts", label: "whereabouts " + whereaboutsVersion, bin: filepath.Join(whereaboutsDir(), "whereabouts"),
		conf: fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"bench-wb","ipam":{"type":"whereabouts","range":%q,"gateway":%q,"configuration_path":%q}}`,
			clusterRange, clusterGateway, w.whereaboutsFlatFile()),
		leftover: func(ctx context.Context) (int, error) {
			pool, err := w.dyn.Resource(ippoolsGVR).Namespace(whereaboutsNS).Get(ctx, whereaboutsPool, metav1.GetOptions{})
			if err != nil {
				return 0, err
			}
			allocs := nestedMap(pool.Object, "spec", "allocations")
			l, err := w.dyn.Resource(reservationsGVR).Namespace(whereaboutsNS).List(ctx, metav1.ListOptions{})
			if err != nil {
				return 0, err
			}
			return len(allocs) + len(l.Items), nil
		}}
	return []clusterIPAMKind{tb, wb}
}

// nestedMap is the object at path in obj, nil if there is none.
func nestedMap(obj map[string]any, path ...string) map[string]any {
	cur := obj
	for _, p := range path {
		next, ok := cur[p].(map[string]any)
		if !ok {
			return nil
		}
		cur = next
	}
	return cur
}

// addresses checks that every ADD returned one address and that no two
// are the same.
func addresses(results [][]byte) error {
	seen := map[netip.Addr]int{}
	for i, out := range results {
		var res current.Result
		if err := json.Unmarshal(out, &res); err != nil {
			return fmt.Errorf("ADD %d: result %s: %w", i, out, err)
		}
		if len(res.IPs) != 1 {
			return fmt.Errorf("ADD %d: %d addresses in %s, want 1", i, len(res.IPs), out)
		}
		a, _ := netip.AddrFromSlice(res.IPs[0].Address.IP)
		if j, dup := seen[a.Unmap()]; dup {
			return fmt.Errorf("ADD %d and %d both got %s", j, i, a)
		}
		seen[a.Unmap()] = i
	}
	return nil
}
