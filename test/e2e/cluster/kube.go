package cluster

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/kube"
)

// IPAMType is the "type" of tapbridge-ipam in an ipam section.
const IPAMType = "tapbridge-ipam"

// API is a real kube-apiserver and etcd (package kube) that the
// cluster's nodes reach, as tapbridge-ipam's store: every node is joined
// to its netns, runs the IPAM with the DaemonSet's service-account
// kubeconfig, and the VMs' pods and IPAMClaims live in Namespace.
type API struct {
	*kube.Cluster
	Kubeconfig string // the nodes' kubeconfig for tapbridge-ipam
	Namespace  string // where the VMs' pods, their claims and NADs are
}

// StartAPI starts the API server in "<ID>-api", applies the project's
// manifests (the IPAMClaim and IPAllocation CRDs, the IPAM's RBAC, ...),
// joins every node to it, writes the nodes' kubeconfig and makes sure
// namespace (and its default service account) exists. The API is
// stopped (by PID) and its netns removed when the cluster closes, after
// the pods and before the nodes. Conflists registered from now on point
// tapbridge-ipam at it. The tapbridge-ipam binary must be in the
// plugin's directory (the nodes' CNI_PATH).
func (c *Cluster) StartAPI(ctx context.Context, namespace string) (*API, error) {
	if err := kube.CheckBinaries(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(c.opts.Plugin), IPAMType)); err != nil {
		return nil, fmt.Errorf("start API: %s is not beside the plugin (harness.BuildIPAM into its directory): %w", IPAMType, err)
	}
	dir := filepath.Join(c.opts.WorkDir, "api")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	kc, err := kube.Start(c.ID, dir)
	if err != nil {
		return nil, fmt.Errorf("start API: %w", err)
	}
	c.onClose(kc.Close)
	a := &API{Cluster: kc, Namespace: namespace}
	if err := a.setUp(ctx, c.Nodes); err != nil {
		return nil, fmt.Errorf("start API: %w", err)
	}
	c.mu.Lock()
	c.api = a
	c.mu.Unlock()
	return a, nil
}

func (a *API) setUp(ctx context.Context, nodes []*Node) error {
	if _, _, err := a.ApplyProject(ctx); err != nil {
		return err
	}
	for i, n := range nodes {
		if _, err := a.JoinNode(n.NS, i+1); err != nil {
			return fmt.Errorf("join %s: %w", n.Name, err)
		}
	}
	var err error
	if a.Kubeconfig, err = a.NodeKubeconfig(ctx); err != nil {
		return err
	}
	return a.EnsureNamespace(ctx, a.Namespace)
}

// API is the cluster's API server, nil before StartAPI.
func (c *Cluster) API() *API {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.api
}

// Persistent makes a network's IPAM tapbridge-ipam on the cluster's API
// with ranges (host-local's "ranges", as JSON) and a timeout of 5s, and
// sets "allowPersistentIPs": true, the NAD setting that has the
// kubevirt-ipam-controller keep an IPAMClaim per VM network. The
// kubeconfig and node name are set when the conflist is registered.
func Persistent(ranges string) Edit {
	return func(plugin map[string]any, _ string) {
		plugin["allowPersistentIPs"] = true
		plugin["ipam"] = map[string]any{"type": IPAMType, "timeout": IPAMTimeout.String(), "ranges": rawJSON(ranges)}
	}
}

type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }

// Launcher is a VM's virt-launcher pod: its object in the API and its
// sandbox on a node.
type Launcher struct {
	VM      string     // the VM's name
	Name    string     // the sandbox's name in the cluster; default VM
	Pod     string     // the pod object's name; default virt-launcher-<VM>-<5 random>
	Network string     // the network of its one network-selection element
	Claim   string     // the element's ipam-claim-reference; "" for none
	Options PodOptions // the capability arguments (MAC: also the element's mac)
}

// AddLauncher creates l's pod in the API, shaped as KubeVirt's (one
// network-selection element: l.Network on this pod's interface, with the
// MAC and the claim), then makes its sandbox on node n and ADDs it as
// Multus would for that element (the capability arguments, CNI_ARGS
// naming the pod and its UID). On failure the pod object is deleted again.
func (a *API) AddLauncher(ctx context.Context, n *Node, l Launcher) (*Pod, error) {
	if l.Name == "" {
		l.Name = l.VM
	}
	if l.Pod == "" {
		l.Pod = LauncherName(l.VM)
	}
	el := kube.Element{Name: l.Network, Namespace: a.Namespace, Interface: IfNameFor(l.Network), Claim: l.Claim}
	if l.Options.MAC != nil {
		el.MAC = l.Options.MAC.String()
	}
	obj, err := a.CreateLauncher(ctx, a.Namespace, l.Pod, l.VM, el)
	if err != nil {
		return nil, err
	}
	l.Options.Object = PodRef{Namespace: obj.Namespace, Name: obj.Name, UID: string(obj.UID)}
	p, err := n.AddPodWith(ctx, l.Network, l.Name, l.Options)
	if err != nil {
		return nil, errors.Join(err, a.DeletePod(ctx, obj.Namespace, obj.Name))
	}
	return p, nil
}

// LauncherName is a name as KubeVirt's generateName gives a
// virt-launcher pod: "virt-launcher-<vm>-" and 5 random characters of
// the API server's alphabet.
func LauncherName(vm string) string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "virt-launcher-" + vm + "-" + string(b)
}

// RemoveLauncher deletes the pod object of p, as the API server does
// once kubelet has torn the pod down.
func (a *API) RemoveLauncher(ctx context.Context, p *Pod) error {
	ref := p.Object()
	return a.DeletePod(ctx, ref.Namespace, ref.Name)
}

// IPAMTimeout is tapbridge-ipam's call timeout in the sandbox's networks.
const IPAMTimeout = 5 * time.Second
