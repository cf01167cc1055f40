package kubeipam

import (
	"context"
	"encoding/json"
	"fmt"

	"k8s.io/client-go/discovery"

	"github.com/tapbridge/tapbridge-cni/internal/allocation"
	"github.com/tapbridge/tapbridge-cni/internal/claim"
	"github.com/tapbridge/tapbridge-cni/internal/kubeapi"
)

// Status answers whether an ADD can work now: the API server answers in
// time and serves both resources the IPAM uses.
func Status(ctx context.Context, cl *kubeapi.Client) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cl.REST)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotReady, err)
	}
	for _, gvr := range []struct{ gv, resource, from string }{
		{allocation.GVR.GroupVersion().String(), allocation.GVR.Resource, "conf/k8s/ipam-crd.yaml"},
		{claim.GVR.GroupVersion().String(), claim.GVR.Resource, "github.com/k8snetworkplumbingwg/ipamclaims"},
	} {
		if err := served(ctx, dc, gvr.gv, gvr.resource); err != nil {
			return fmt.Errorf("%w: %s (its CRD is in %s): %w", ErrNotReady, gvr.resource+"."+gvr.gv, gvr.from, err)
		}
	}
	return nil
}

func served(ctx context.Context, dc *discovery.DiscoveryClient, gv, resource string) error {
	var list struct {
		Resources []struct {
			Name string `json:"name"`
		} `json:"resources"`
	}
	raw, err := dc.RESTClient().Get().AbsPath("/apis/" + gv).Do(ctx).Raw()
	if err != nil {
		return fmt.Errorf("not served: %w", kubeapi.Classify(err))
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return err
	}
	for _, r := range list.Resources {
		if r.Name == resource {
			return nil
		}
	}
	return fmt.Errorf("not served")
}
