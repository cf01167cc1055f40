// Package claim reads IPAMClaims (k8s.cni.cncf.io/v1alpha1, from
// github.com/k8snetworkplumbingwg/ipamclaims) and reports the addresses
// held for them in their status. The kubevirt-ipam-controller creates one
// claim per VM network and names it in the virt-launcher pod's
// network-selection element.
package claim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// GVR is the IPAMClaim resource.
var GVR = schema.GroupVersionResource{Group: "k8s.cni.cncf.io", Version: "v1alpha1", Resource: "ipamclaims"}

// Claim is what the IPAM reads of an IPAMClaim.
type Claim struct {
	Namespace, Name, UID string
	ResourceVersion      string
	Network              string // spec.network: the CNI network it is for
	Interface            string // spec.interface
	IPs                  []string
}

func (c *Claim) String() string { return "IPAMClaim " + c.Namespace + "/" + c.Name }

// Get reads a claim; errors are the API's (NotFound when there is none).
func Get(ctx context.Context, dyn dynamic.Interface, namespace, name string) (*Claim, error) {
	u, err := dyn.Resource(GVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	c := &Claim{Namespace: namespace, Name: name, UID: string(u.GetUID()), ResourceVersion: u.GetResourceVersion()}
	spec, _ := u.Object["spec"].(map[string]any)
	c.Network, _ = spec["network"].(string)
	c.Interface, _ = spec["interface"].(string)
	status, _ := u.Object["status"].(map[string]any)
	ips, _ := status["ips"].([]any)
	for _, ip := range ips {
		if s, ok := ip.(string); ok {
			c.IPs = append(c.IPs, s)
		}
	}
	return c, nil
}

// Addrs are the addresses status.ips holds (with or without a prefix
// length), in order; an entry that is neither is skipped.
func (c *Claim) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, s := range c.IPs {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Addr().Unmap())
		} else if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// Names reports whether status.ips holds a (with any prefix length; an
// IPv4-mapped entry names its IPv4 address, as in Addrs).
func (c *Claim) Names(a netip.Addr) bool {
	return slices.Contains(c.Addrs(), a.Unmap())
}

// SetIPs writes status.ips (addresses with prefix length, as the
// controller and OVN-Kubernetes write them). A merge patch of the status
// subresource: only the status is touched. The claim's UID is a
// precondition, so a claim deleted and made anew under the same name is
// never given another's addresses, and so is the resourceVersion read:
// a Conflict says someone wrote the claim since.
func SetIPs(ctx context.Context, dyn dynamic.Interface, c *Claim, ips []string) error {
	meta := map[string]any{"uid": c.UID, "resourceVersion": c.ResourceVersion}
	patch, err := json.Marshal(map[string]any{"metadata": meta, "status": map[string]any{"ips": ips}})
	if err != nil {
		return err
	}
	_, err = dyn.Resource(GVR).Namespace(c.Namespace).Patch(ctx, c.Name, types.MergePatchType, patch,
		metav1.PatchOptions{FieldValidation: "Strict"}, "status")
	if err != nil {
		return fmt.Errorf("set status.ips of %s: %w", c, err)
	}
	return nil
}
