package kubeipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/tapbridge/tapbridge-cni/internal/allocation"
	"github.com/tapbridge/tapbridge-cni/internal/kubeapi"
)

// Valid is the runtime's cni.dev/valid-attachments for this network on
// this node, by (containerID, ifname).
type Valid map[[2]string]bool

// ParseValid reads the GC list; a missing key is nil (then GC frees
// nothing of this node by the list, and only sweeps).
func ParseValid(c *Config) (Valid, error) {
	if len(c.Raw.Attachments) == 0 {
		return nil, nil
	}
	var list []struct {
		ContainerID string `json:"containerID"`
		IfName      string `json:"ifname"`
	}
	if err := json.Unmarshal(c.Raw.Attachments, &list); err != nil {
		return nil, fmt.Errorf("%w: cni.dev/valid-attachments: %v", ErrDecode, err)
	}
	v := Valid{}
	for _, a := range list {
		v[[2]string{a.ContainerID, a.IfName}] = true
	}
	return v, nil
}

// GC frees what lost DELs left, for this network: users on this node
// that the runtime no longer lists (when it sent a list), and users on
// any node whose pod is gone; then every allocation without an owner
// left (an attachment's without users, a claim's without users that the
// claim no longer keeps). Allocations younger than the call timeout are left
// alone: an ADD may still be making them. It keeps going past failures.
func GC(ctx context.Context, cl *kubeapi.Client, c *Config, valid Valid) error {
	store := allocation.Store{Dynamic: cl.Dynamic, Metadata: cl.Metadata}
	allocs, err := store.OfNetwork(ctx, c.Network)
	if err != nil {
		return fmt.Errorf("list allocations of network %s: %w", c.Network, kubeapi.Classify(err))
	}
	pods := podCache{cl: cl, gone: map[allocation.Pod]bool{}}
	var errs []error
	for _, a := range allocs {
		if time.Since(a.Created) < c.Timeout {
			continue
		}
		stale, err := staleUsers(ctx, c, a, valid, &pods)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(stale) == len(a.Spec.Users) || a.Spec.Claim != nil && len(stale) > 0 || a.Spec.Claim != nil && len(a.Spec.Users) == 0 {
			errs = append(errs, release(ctx, cl, store, a, stale))
		}
	}
	return errors.Join(errs...)
}

func staleUsers(ctx context.Context, c *Config, a *allocation.Allocation, valid Valid, pods *podCache) ([]allocation.User, error) {
	var stale []allocation.User
	for _, u := range a.Spec.Users {
		if u.Node == c.Node && valid != nil && !valid[[2]string{u.ContainerID, u.IfName}] {
			stale = append(stale, u)
			continue
		}
		gone, err := pods.isGone(ctx, u.Pod)
		if err != nil {
			return nil, err
		}
		if gone {
			stale = append(stale, u)
		}
	}
	return stale, nil
}

// podCache asks about each pod once per GC.
type podCache struct {
	cl   *kubeapi.Client
	gone map[allocation.Pod]bool
}

// isGone: the pod does not exist, or exists with another UID. A user
// without a pod (not under Kubernetes) is never gone by this test.
func (p *podCache) isGone(ctx context.Context, pod *allocation.Pod) (bool, error) {
	if pod == nil {
		return false, nil
	}
	if g, ok := p.gone[*pod]; ok {
		return g, nil
	}
	got, err := p.cl.GetPod(ctx, pod.Namespace, pod.Name)
	switch {
	case apierrors.IsNotFound(err):
		p.gone[*pod] = true
	case err != nil:
		return false, fmt.Errorf("read pod %s/%s: %w", pod.Namespace, pod.Name, kubeapi.Classify(err))
	default:
		p.gone[*pod] = pod.UID != "" && got.UID != pod.UID
	}
	return p.gone[*pod], nil
}
