package kube_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/tapbridge/tapbridge-cni/test/harness"
	"github.com/tapbridge/tapbridge-cni/test/kube"
)

var allocGVR = kube.AllocationGVR

// node is a simulated node: a netns joined to the API server's, where
// the IPAM is exec'd as the plugin would exec it there.
type node struct {
	name string
	ns   harness.Netns
	pod  harness.Netns // CNI_NETNS: skel refuses the plugin's own netns
}

var nodeSeq atomic.Int32

func newNode(t *testing.T, name string) *node {
	t.Helper()
	id := fmt.Sprintf("%s-n%d", runID, nodeSeq.Add(1))
	n := &node{name: name, ns: harness.Netns{Name: id}, pod: harness.Netns{Name: id + "p"}}
	for _, ns := range []harness.Netns{n.ns, n.pod} {
		t.Cleanup(func() {
			if err := ns.Delete(); err != nil {
				t.Error(err)
			}
		})
		if _, err := harness.NewNetns(ns.Name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cluster.JoinNode(n.ns, int(nodeSeq.Load())); err != nil {
		t.Fatal(err)
	}
	return n
}

// network is one network's IPAM config.
type network struct {
	name       string
	ranges     string // the JSON of "ranges"
	timeout    string
	kubeconfig string
}

func newNet(t *testing.T, ranges string) *network {
	name := strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	name = strings.ReplaceAll(name, "_", "-")
	if len(name) > 50 {
		name = name[:50]
	}
	return &network{name: name, ranges: ranges, timeout: "8s", kubeconfig: saConfig}
}

func (nw *network) conf(n *node) []byte {
	return fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":%q,"ipam":{"type":"tapbridge-ipam","kubeconfig":%q,"nodeName":%q,"timeout":%q,"ranges":%s,"routes":[{"dst":"0.0.0.0/0"}]}}`,
		nw.name, nw.kubeconfig, n.name, nw.timeout, nw.ranges)
}

// attachment is one (containerID, ifname) of a pod.
type attachment struct {
	cid, ifname string
	pod         *corev1.Pod // nil: no K8S_POD_* args
	ip          string      // CNI_ARGS IP= (a static request)
}

func (a attachment) args() string {
	var kv []string
	if a.pod != nil {
		kv = append(kv, "K8S_POD_NAMESPACE="+a.pod.Namespace, "K8S_POD_NAME="+a.pod.Name, "K8S_POD_UID="+string(a.pod.UID))
	}
	if a.ip != "" {
		kv = append(kv, "IP="+a.ip)
	}
	if kv == nil {
		return ""
	}
	return strings.Join(append([]string{"IgnoreUnknown=1"}, kv...), ";")
}

func (n *node) call(nw *network, cmd string, a attachment, stdin []byte, extra ...string) harness.Outcome {
	if stdin == nil {
		stdin = nw.conf(n)
	}
	c := harness.Call{Binary: ipamBin, Command: cmd, ContainerID: a.cid, IfName: a.ifname, Args: a.args(), Netns: n.pod.Path(),
		Path: "/nonexistent", Stdin: stdin, Extra: extra}
	var out harness.Outcome
	err := n.ns.Do(func() error {
		var err error
		out, err = c.Run()
		return err
	})
	if err != nil {
		// A protocol violation: say so in stderr, and never pass it off
		// as a success (a kill's rc 137 with empty stdout stays as is).
		out.Stderr = append(out.Stderr, []byte("\nprotocol: "+err.Error())...)
		if out.RC == 0 {
			out.RC = -1
		}
	}
	return out
}

// add runs ADD and returns its addresses; it fails the test unless ADD
// succeeds.
func (n *node) add(t *testing.T, nw *network, a attachment, extra ...string) []netip.Addr {
	t.Helper()
	out := n.call(nw, "ADD", a, nil, extra...)
	if out.RC != 0 {
		t.Fatalf("ADD %s on %s: rc %d %s %s", a.cid, n.name, out.RC, out.Stdout, out.Stderr)
	}
	return resultAddrs(t, out.Stdout)
}

func (n *node) mustSucceed(t *testing.T, nw *network, cmd string, a attachment, stdin []byte) {
	t.Helper()
	if out := n.call(nw, cmd, a, stdin); out.RC != 0 {
		t.Fatalf("%s %s on %s: rc %d %s %s", cmd, a.cid, n.name, out.RC, out.Stdout, out.Stderr)
	}
}

// mustFail runs cmd and checks it fails with code.
func (n *node) mustFail(t *testing.T, nw *network, cmd string, a attachment, code uint, extra ...string) string {
	t.Helper()
	out := n.call(nw, cmd, a, nil, extra...)
	if out.RC == 0 || out.Err == nil {
		t.Fatalf("%s %s on %s: rc %d, stdout %s, stderr %s; want code %d", cmd, a.cid, n.name, out.RC, out.Stdout, out.Stderr, code)
	}
	if out.Err.Code != code {
		t.Fatalf("%s %s: code %d (%s), want %d", cmd, a.cid, out.Err.Code, out.Err.Msg, code)
	}
	t.Logf("%s %s: code %d: %s", cmd, a.cid, out.Err.Code, out.Err.Msg)
	return out.Err.Msg
}

func resultAddrs(t *testing.T, stdout []byte) []netip.Addr {
	t.Helper()
	var res current.Result
	if err := json.Unmarshal(stdout, &res); err != nil {
		t.Fatalf("result %s: %v", stdout, err)
	}
	var out []netip.Addr
	for _, ip := range res.IPs {
		a, _ := netip.AddrFromSlice(ip.Address.IP)
		out = append(out, a.Unmap())
	}
	return out
}

// withKeys is the network's config with more top-level keys, given as
// JSON members (`"runtimeConfig":{...}`).
func withKeys(nw *network, n *node, members string) []byte {
	conf := nw.conf(n)
	return append(conf[:len(conf)-1], ","+members+"}"...)
}

// makeNode creates a Node object (no kubelet runs: it is only a name the
// GC's sweep asks about), deleted when the test ends.
func makeNode(t *testing.T, name string) {
	t.Helper()
	cs, _ := clients(t)
	if _, err := cs.CoreV1().Nodes().Create(ctxT(t), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	t.Cleanup(func() { deleteNode(t, name) })
}

func deleteNode(t *testing.T, name string) {
	t.Helper()
	cs, _ := clients(t)
	if err := cs.CoreV1().Nodes().Delete(ctxT(t), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Error(err)
	}
}

func gcStdin(nw *network, n *node, valid ...attachment) []byte {
	var list []map[string]string
	for _, a := range valid {
		list = append(list, map[string]string{"containerID": a.cid, "ifname": a.ifname})
	}
	b, _ := json.Marshal(list)
	if list == nil {
		b = []byte("[]")
	}
	conf := nw.conf(n)
	return append(conf[:len(conf)-1], fmt.Appendf(nil, `,"cni.dev/valid-attachments":%s}`, b)...)
}

func clients(t *testing.T) (*kubernetes.Clientset, dynamic.Interface) {
	t.Helper()
	cs, err := cluster.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cluster.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	return cs, dyn
}

// allocations lists the network's IPAllocations as address → object.
func allocations(t *testing.T, nw *network) map[string]unstructured.Unstructured {
	t.Helper()
	_, dyn := clients(t)
	list, err := dyn.Resource(allocGVR).List(ctxT(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]unstructured.Unstructured{}
	for _, it := range list.Items {
		if name, _, _ := unstructured.NestedString(it.Object, "spec", "network"); name == nw.name {
			addr, _, _ := unstructured.NestedString(it.Object, "spec", "address")
			out[addr] = it
		}
	}
	return out
}

// claimAllocations are the network's allocations owned by claim name.
func claimAllocations(t *testing.T, nw *network, name string) []string {
	t.Helper()
	var out []string
	for addr, o := range allocations(t, nw) {
		if c, _, _ := unstructured.NestedString(o.Object, "spec", "claim", "name"); c == name {
			out = append(out, addr)
		}
	}
	return out
}

func users(o unstructured.Unstructured) []string {
	us, _, _ := unstructured.NestedSlice(o.Object, "spec", "users")
	var out []string
	for _, u := range us {
		m, _ := u.(map[string]any)
		out = append(out, fmt.Sprint(m["containerID"]))
	}
	return out
}

// makePod creates a pod whose network-selection annotation is networks
// (empty: none). No kubelet runs: the pod stays Pending, which is all
// the IPAM reads.
func makePod(t *testing.T, name, networks string) *corev1.Pod {
	t.Helper()
	cs, _ := clients(t)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: podNamespace},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "compute", Image: "example.invalid/virt-launcher"}}},
	}
	if networks != "" {
		p.Annotations = map[string]string{"k8s.v1.cni.cncf.io/networks": networks}
	}
	out, err := cs.CoreV1().Pods(podNamespace).Create(ctxT(t), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	return out
}

func deletePod(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if err := cluster.DeletePod(ctxT(t), p.Namespace, p.Name); err != nil {
		t.Fatal(err)
	}
}

// makeClaim creates an IPAMClaim. The kubevirt-ipam-controller writes
// spec.network (the NAD config's name) and an empty spec.interface (the
// CRD requires the key; its Go type has no omitempty); a non-empty one is
// what OVN-Kubernetes' convention would write.
func makeClaim(t *testing.T, name, network, iface string) {
	t.Helper()
	if err := cluster.CreateClaim(ctxT(t), podNamespace, name, network, iface); err != nil {
		t.Fatal(err)
	}
}

func claimIPs(t *testing.T, name string) []string {
	t.Helper()
	ips, err := cluster.ClaimIPs(ctxT(t), podNamespace, name)
	if err != nil {
		t.Fatal(err)
	}
	return ips
}

func deleteClaim(t *testing.T, name string) {
	t.Helper()
	if err := cluster.DeleteClaim(ctxT(t), podNamespace, name); err != nil {
		t.Fatal(err)
	}
}

// claimNetworks is a virt-launcher pod's annotation: network nw on
// interface iface with the claim, as the controller writes it.
func claimNetworks(nw *network, iface, claim string) string {
	return fmt.Sprintf(`[{"name":%q,"namespace":%q,"interface":%q,"ipam-claim-reference":%q}]`, nw.name, podNamespace, iface, claim)
}
