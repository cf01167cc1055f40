package kube

// What KubeVirt and the kubevirt-ipam-controller put into the API for a
// VM, for callers outside this package (the demo, the end-to-end
// migration tests): a namespace pods can be created in, an IPAMClaim per
// VM network, virt-launcher pods whose network-selection element names
// it, and, to check tapbridge-ipam, its IPAllocations.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// Resources tapbridge-ipam reads and writes.
var (
	ClaimGVR      = schema.GroupVersionResource{Group: "k8s.cni.cncf.io", Version: "v1alpha1", Resource: "ipamclaims"}
	AllocationGVR = schema.GroupVersionResource{Group: "tapbridge.io", Version: "v1alpha1", Resource: "ipallocations"}
)

// NetworksAnnotation is a pod's network-selection annotation (Multus').
const NetworksAnnotation = "k8s.v1.cni.cncf.io/networks"

// CheckBinaries says, naming the fix, what the API server tier lacks:
// build/kube's kube-apiserver and kubectl of Version (scripts/deps/kube.sh
// builds them, 11-20 minutes once), and etcd.
func CheckBinaries() error {
	var missing []string
	for _, bin := range []string{KubeAPIServer(), Kubectl()} {
		if _, err := os.Stat(bin); err != nil {
			missing = append(missing, bin+" is missing")
			continue
		}
		if v, _ := os.ReadFile(bin + ".version"); strings.TrimSpace(string(v)) != Version {
			missing = append(missing, fmt.Sprintf("%s is of version %q, want %s", bin, strings.TrimSpace(string(v)), Version))
		}
	}
	if _, err := exec.LookPath("etcd"); err != nil {
		missing = append(missing, "etcd is not installed (Debian's etcd-server)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s: run scripts/deps/kube.sh (or make deps) first: it installs etcd and builds kube-apiserver and kubectl %s from source into build/kube, once (11-20 minutes on 2 cores)",
			strings.Join(missing, "; "), Version)
	}
	return nil
}

// NodeKubeconfig writes the kubeconfig a node's tapbridge-ipam uses, as
// the DaemonSet's installer writes it: the token of the service account
// tapbridge-cni of kube-system (conf/k8s/ipam-rbac.yaml, so the IPAM runs
// with the project's RBAC), for the API as the nodes reach it.
func (c *Cluster) NodeKubeconfig(ctx context.Context) (string, error) {
	token, err := c.ServiceAccountToken(ctx, "kube-system", "tapbridge-cni")
	if err != nil {
		return "", err
	}
	return c.TokenKubeconfig("tapbridge-cni", token)
}

// EnsureNamespace makes a namespace (unless it exists, as "default"
// does) and its default service account, which no controller-manager
// runs here to make (pods need it).
func (c *Cluster) EnsureNamespace(ctx context.Context, name string) error {
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	_, err = cs.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create service account %s/default: %w", name, err)
	}
	return nil
}

// Element is one network-selection element of a virt-launcher pod, as
// KubeVirt writes it (and the kubevirt-ipam-controller's
// ipam-claim-reference).
type Element struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	Interface string `json:"interface,omitempty"`
	MAC       string `json:"mac,omitempty"`
	Claim     string `json:"ipam-claim-reference,omitempty"`
}

// ClaimName is the kubevirt-ipam-controller's name for the IPAMClaim of
// a VM's network: "<vm>.<network>".
func ClaimName(vm, network string) string { return vm + "." + network }

// CreateClaim makes the IPAMClaim of a VM network as the
// kubevirt-ipam-controller does (spec.network is the NAD's network name,
// spec.interface the pod interface), with strict field validation.
func (c *Cluster) CreateClaim(ctx context.Context, namespace, name, network, iface string) error {
	dyn, err := dynamic.NewForConfig(c.AdminConfig())
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1alpha1", "kind": "IPAMClaim",
		"metadata": map[string]any{"name": name, "namespace": namespace},
		"spec":     map[string]any{"network": network, "interface": iface},
	}}
	if _, err := dyn.Resource(ClaimGVR).Namespace(namespace).Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
		return fmt.Errorf("create IPAMClaim %s/%s: %w", namespace, name, err)
	}
	return nil
}

// ClaimIPs is the claim's status.ips, as tapbridge-ipam wrote them.
func (c *Cluster) ClaimIPs(ctx context.Context, namespace, name string) ([]string, error) {
	dyn, err := dynamic.NewForConfig(c.AdminConfig())
	if err != nil {
		return nil, err
	}
	u, err := dyn.Resource(ClaimGVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get IPAMClaim %s/%s: %w", namespace, name, err)
	}
	ips, _, _ := unstructured.NestedStringSlice(u.Object, "status", "ips")
	return ips, nil
}

// DeleteClaim deletes the claim, as the controller does with its VM.
func (c *Cluster) DeleteClaim(ctx context.Context, namespace, name string) error {
	dyn, err := dynamic.NewForConfig(c.AdminConfig())
	if err != nil {
		return err
	}
	if err := dyn.Resource(ClaimGVR).Namespace(namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete IPAMClaim %s/%s: %w", namespace, name, err)
	}
	return nil
}

// CreateLauncher makes a pod shaped as KubeVirt's virt-launcher pod of
// vm: its labels, a "compute" container, and one network-selection
// element per VM network. No kubelet runs, so it stays Pending, which is
// all tapbridge-ipam reads.
func (c *Cluster) CreateLauncher(ctx context.Context, namespace, name, vm string, elems ...Element) (*corev1.Pod, error) {
	cs, err := c.Clientset()
	if err != nil {
		return nil, err
	}
	nets, err := json.Marshal(elems)
	if err != nil {
		return nil, err
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: namespace,
			Labels:      map[string]string{"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": vm, "kubevirt.io/domain": vm},
			Annotations: map[string]string{NetworksAnnotation: string(nets), "kubevirt.io/domain": vm},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "compute", Image: "quay.io/kubevirt/virt-launcher"}}},
	}
	out, err := cs.CoreV1().Pods(namespace).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", namespace, name, err)
	}
	return out, nil
}

// DeletePod deletes a pod at once (grace 0: without a kubelet a pod with
// a grace period lingers) and waits until it is gone.
func (c *Cluster) DeletePod(ctx context.Context, namespace, name string) error {
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	zero := int64(0)
	err = cs.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod %s/%s: %w", namespace, name, err)
	}
	for {
		_, err := cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pod %s/%s still there: %w", namespace, name, ctx.Err())
		case <-time.After(100 * time.Millisecond): // no watch for one object
		}
	}
}

// Allocation is one IPAllocation of tapbridge-ipam, as `kubectl get
// ipallocations` shows it, with its users' container IDs.
type Allocation struct {
	Name, Network, Address string
	Claim                  string // the owning IPAMClaim's name, "" for none
	Users                  []string
	Created                time.Time
}

// Allocations lists the IPAllocations of network, by address.
func (c *Cluster) Allocations(ctx context.Context, network string) ([]Allocation, error) {
	dyn, err := dynamic.NewForConfig(c.AdminConfig())
	if err != nil {
		return nil, err
	}
	list, err := dyn.Resource(AllocationGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list IPAllocations: %w", err)
	}
	var out []Allocation
	for _, it := range list.Items {
		a := Allocation{Name: it.GetName(), Created: it.GetCreationTimestamp().Time}
		a.Network, _, _ = unstructured.NestedString(it.Object, "spec", "network")
		if a.Network != network {
			continue
		}
		a.Address, _, _ = unstructured.NestedString(it.Object, "spec", "address")
		a.Claim, _, _ = unstructured.NestedString(it.Object, "spec", "claim", "name")
		users, _, _ := unstructured.NestedSlice(it.Object, "spec", "users")
		for i, u := range users {
			m, _ := u.(map[string]any)
			id, _ := m["containerID"].(string)
			if id == "" { // the CRD requires it: a user without one is a bug to report, not a "<nil>" to compare
				return nil, fmt.Errorf("IPAllocation %s: user %d has no containerID: %v", a.Name, i, u)
			}
			a.Users = append(a.Users, id)
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out, nil
}

// NADConfig is the CNI config (spec.config) of the NetworkAttachmentDefinition
// called name in conf/k8s/file, so a sandbox runs the shipped config.
func NADConfig(file, name string) ([]byte, error) {
	path := filepath.Join(harness.RepoRoot(), "conf", "k8s", file)
	docs, err := splitDocs(path)
	if err != nil {
		return nil, err
	}
	for _, d := range docs {
		if d.Kind != "NetworkAttachmentDefinition" || d.Name != name {
			continue
		}
		var nad struct {
			Spec struct {
				Config string `json:"config"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(d.raw, &nad); err != nil {
			return nil, fmt.Errorf("%s: NAD %s: %w", path, name, err)
		}
		return []byte(nad.Spec.Config), nil
	}
	return nil, fmt.Errorf("%s has no NetworkAttachmentDefinition %s", path, name)
}
