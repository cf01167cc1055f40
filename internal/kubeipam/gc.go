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
// that the runtime no longer lists (when it sent a list), and users on a
// node that no longer exists whose pod is gone too (the sweep); then
// every allocation without an owner left (an attachment's without users,
// a claim's without users that the claim no longer keeps). Allocations
// younger than the call timeout are left alone: an ADD may still be
// making them. It keeps going past failures.
//
// The sweep judges only other nodes' users, and only once their Node
// object is gone. A pod object that is gone says nothing about its VM:
// pods force-deleted on a node cut off from the API server keep running
// there, and freeing their addresses would hand a running VM's address
// to another (two guests on one address on the L2). A Node object is
// deleted when the node leaves the cluster (its pods are then deleted by
// the pod garbage collector), so a user recorded on a node without one
// runs nowhere. That is an assumption about the operator, which the IPAM
// cannot check: `kubectl delete node` of a NotReady node that is only cut
// off (still running its VMs) breaks it, and its addresses are then
// handed out again while its guests still use them. A node must be fenced
// (powered off) or drained before its Node object is deleted. This node's own users are the runtime's to judge: its
// list names every attachment still there, whether or not its pod object
// is. The sweep runs only if this node's own name is a Node, which shows
// that the names recorded (nodeName, else the hostname) are Node names:
// were they not, every node would look gone.
func GC(ctx context.Context, cl *kubeapi.Client, c *Config, valid Valid) error {
	store := allocation.Store{Dynamic: cl.Dynamic, Metadata: cl.Metadata}
	allocs, err := store.OfNetwork(ctx, c.Network)
	if err != nil {
		return fmt.Errorf("list allocations of network %s: %w", c.Network, kubeapi.Classify(err))
	}
	w := world{cl: cl, podGone: map[allocation.Pod]bool{}, nodeGone: map[string]bool{}}
	var errs []error
	for _, a := range allocs {
		if time.Since(a.Created) < c.Timeout {
			continue
		}
		stale, err := staleUsers(ctx, c, a, valid, &w)
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

func staleUsers(ctx context.Context, c *Config, a *allocation.Allocation, valid Valid, w *world) ([]allocation.User, error) {
	var stale []allocation.User
	for _, u := range a.Spec.Users {
		if u.Node == c.Node {
			if valid != nil && !valid[[2]string{u.ContainerID, u.IfName}] {
				stale = append(stale, u)
			}
			continue
		}
		gone, err := w.userGone(ctx, c.Node, u)
		if err != nil {
			return nil, err
		}
		if gone {
			stale = append(stale, u)
		}
	}
	return stale, nil
}

// world asks about each node and pod once per GC.
type world struct {
	cl       *kubeapi.Client
	podGone  map[allocation.Pod]bool
	nodeGone map[string]bool
}

// userGone: the user's node is not a Node (and this node is one: see GC)
// and its pod is gone.
func (w *world) userGone(ctx context.Context, self string, u allocation.User) (bool, error) {
	if u.Pod == nil {
		return false, nil // not under Kubernetes: only DEL or the runtime's list frees it
	}
	selfGone, err := w.isNodeGone(ctx, self)
	if err != nil || selfGone {
		return false, err
	}
	if gone, err := w.isNodeGone(ctx, u.Node); err != nil || !gone {
		return false, err
	}
	return w.isGone(ctx, u.Pod)
}

func (w *world) isNodeGone(ctx context.Context, name string) (bool, error) {
	if g, ok := w.nodeGone[name]; ok {
		return g, nil
	}
	_, err := w.cl.GetNode(ctx, name)
	switch {
	case apierrors.IsNotFound(err):
		w.nodeGone[name] = true
	case err != nil:
		return false, fmt.Errorf("read node %s: %w", name, kubeapi.Classify(err))
	default:
		w.nodeGone[name] = false
	}
	return w.nodeGone[name], nil
}

// isGone: the pod does not exist, or exists with another UID.
func (w *world) isGone(ctx context.Context, pod *allocation.Pod) (bool, error) {
	if g, ok := w.podGone[*pod]; ok {
		return g, nil
	}
	got, err := w.cl.GetPod(ctx, pod.Namespace, pod.Name)
	switch {
	case apierrors.IsNotFound(err):
		w.podGone[*pod] = true
	case err != nil:
		return false, fmt.Errorf("read pod %s/%s: %w", pod.Namespace, pod.Name, kubeapi.Classify(err))
	default:
		w.podGone[*pod] = pod.UID != "" && got.UID != pod.UID
	}
	return w.podGone[*pod], nil
}
