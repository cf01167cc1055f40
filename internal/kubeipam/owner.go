package kubeipam

import (
	"context"
	"fmt"
	"net/netip"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/tapbridge/tapbridge-cni/internal/allocation"
	"github.com/tapbridge/tapbridge-cni/internal/claim"
	"github.com/tapbridge/tapbridge-cni/internal/kubeapi"
	"github.com/tapbridge/tapbridge-cni/internal/pool"
	"github.com/tapbridge/tapbridge-cni/internal/selection"
)

// owner is who an ADD allocates for: the pod attachment, and the claim
// when the pod's network-selection element names one.
type owner struct {
	user  allocation.User
	claim *claim.Claim
}

// resolveOwner reads the pod (when CNI_ARGS name one), finds this
// network's element in its annotation and reads the claim it references.
func resolveOwner(ctx context.Context, cl *kubeapi.Client, c *Config) (*owner, error) {
	a := c.Attachment
	o := &owner{user: allocation.User{ContainerID: a.ContainerID, IfName: a.IfName, Node: c.Node}}
	if a.PodName == "" {
		return o, nil
	}
	pod, err := cl.GetPod(ctx, a.PodNamespace, a.PodName)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: pod %s/%s (from CNI_ARGS)", ErrNoPod, a.PodNamespace, a.PodName)
	}
	if err != nil {
		return nil, fmt.Errorf("read pod %s/%s: %w", a.PodNamespace, a.PodName, kubeapi.Classify(err))
	}
	if a.PodUID != "" && pod.UID != a.PodUID {
		return nil, fmt.Errorf("%w: pod %s/%s has UID %s, not the %s of CNI_ARGS (re-created)", ErrNoPod, a.PodNamespace, a.PodName, pod.UID, a.PodUID)
	}
	o.user.Pod = &allocation.Pod{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}
	els, err := selection.Parse(pod.Annotations[selection.Annotation])
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	el, ok := selection.Find(els, c.Network, a.IfName)
	if !ok || el.Claim == "" {
		return o, nil
	}
	if o.claim, err = readClaim(ctx, cl, pod.Namespace, el.Claim, c.Network, a.IfName); err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return o, nil
}

// readClaim reads the claim the pod names and checks it is for this
// attachment. The kubevirt-ipam-controller writes spec.network from the
// NAD config's "name" (the CNI network name this IPAM knows) and leaves
// spec.interface empty for a secondary network; whoever does set it
// (OVN-Kubernetes' convention) means the pod interface, which is
// CNI_IFNAME (KubeVirt names it "pod" and 11 hex digits of the sha256 of
// the VM's network name, and writes that into the element's interface).
func readClaim(ctx context.Context, cl *kubeapi.Client, namespace, name, network, ifName string) (*claim.Claim, error) {
	cm, err := claim.Get(ctx, cl.Dynamic, namespace, name)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: ipam-claim-reference %s/%s does not exist", ErrNoClaim, namespace, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read IPAMClaim %s/%s: %w", namespace, name, kubeapi.Classify(err))
	}
	if cm.Network != network {
		return nil, fmt.Errorf("%w: %s: spec.network is %q, want %q (this network's name)", ErrClaimSpec, cm, cm.Network, network)
	}
	if cm.Interface != "" && cm.Interface != ifName {
		return nil, fmt.Errorf("%w: %s: spec.interface is %q, want %q (this attachment's CNI_IFNAME)", ErrClaimSpec, cm, cm.Interface, ifName)
	}
	return cm, nil
}

// claimRef is the allocation's record of the claim.
func (o *owner) claimRef() *allocation.Claim {
	if o.claim == nil {
		return nil
	}
	return &allocation.Claim{Namespace: o.claim.Namespace, Name: o.claim.Name, UID: o.claim.UID}
}

// owns reports whether a is the claim's (same UID: a claim made anew
// under the same name is another claim).
func (o *owner) owns(a *allocation.Allocation) bool {
	return o.claim != nil && a.Spec.Claim != nil && a.Spec.Claim.UID == o.claim.UID
}

// claimAddr is the address the claim's status.ips names in set.
func (o *owner) claimAddr(set pool.Set) (netip.Addr, bool) {
	for _, a := range o.claim.Addrs() {
		if _, ok := set.Find(a); ok {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// seed starts set i's sequence of candidates (allocate): the claim's, so
// that every pod of a VM tries the same addresses and meets the others'
// allocation, or the attachment's, so that a retried ADD tries its own
// first address again.
func (o *owner) seed(network string, i int) string {
	if o.claim != nil {
		return fmt.Sprintf("claim\x00%s\x00%s\x00%d", network, o.claim.UID, i)
	}
	return fmt.Sprintf("attachment\x00%s\x00%d", allocation.AttachmentKey(network, o.user.ContainerID, o.user.IfName), i)
}

// claimKeeps reports whether the claim an allocation names still holds
// its address: the claim exists (same UID) and its status names the
// address. An allocation of a claim without users is kept only then; any
// other is a lost race's or a killed ADD's, whose address nobody got.
func claimKeeps(ctx context.Context, cl *kubeapi.Client, a *allocation.Allocation) (bool, error) {
	ref := a.Spec.Claim
	cm, err := claim.Get(ctx, cl.Dynamic, ref.Namespace, ref.Name)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read IPAMClaim %s/%s: %w", ref.Namespace, ref.Name, kubeapi.Classify(err))
	}
	return cm.UID == ref.UID && cm.Names(a.Addr()), nil
}
