package allocation

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
)

// Store reads and writes IPAllocations. Errors are the API's, unwrapped,
// so callers can test them with apierrors.
type Store struct {
	Dynamic  dynamic.Interface
	Metadata metadata.Interface
}

type object struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       Spec              `json:"spec"`
}

func toObject(a *Allocation) (*unstructured.Unstructured, error) {
	o := object{APIVersion: apiVersion, Kind: kind, Spec: a.Spec,
		Metadata: metav1.ObjectMeta{Name: a.Name, Labels: a.labels(), ResourceVersion: a.ResourceVersion, UID: types.UID(a.UID)}}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&o)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", a.Name, err)
	}
	return &unstructured.Unstructured{Object: m}, nil
}

func fromObject(u *unstructured.Unstructured) (*Allocation, error) {
	var o object
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &o); err != nil {
		return nil, fmt.Errorf("decode IPAllocation %s: %w", u.GetName(), err)
	}
	return &Allocation{Name: o.Metadata.Name, UID: string(o.Metadata.UID), ResourceVersion: o.Metadata.ResourceVersion,
		Created: o.Metadata.CreationTimestamp.Time, Spec: o.Spec}, nil
}

// Create makes a new allocation: the claim on its address. AlreadyExists
// means the address is someone else's.
func (s Store) Create(ctx context.Context, a *Allocation) (*Allocation, error) {
	a.Name = Name(a.Spec.Network, a.Addr())
	u, err := toObject(a)
	if err != nil {
		return nil, err
	}
	out, err := s.Dynamic.Resource(GVR).Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"})
	if err != nil {
		return nil, err
	}
	return fromObject(out)
}

// Update writes a's users back, guarded by a's resourceVersion (a
// Conflict means someone else changed it first).
func (s Store) Update(ctx context.Context, a *Allocation) (*Allocation, error) {
	u, err := toObject(a)
	if err != nil {
		return nil, err
	}
	out, err := s.Dynamic.Resource(GVR).Update(ctx, u, metav1.UpdateOptions{FieldValidation: "Strict"})
	if err != nil {
		return nil, err
	}
	return fromObject(out)
}

// Delete removes a if it is still the very object read (same UID and
// resourceVersion): a user added in between keeps it. NotFound is nil.
func (s Store) Delete(ctx context.Context, a *Allocation) error {
	uid := types.UID(a.UID)
	rv := a.ResourceVersion
	err := s.Dynamic.Resource(GVR).Delete(ctx, a.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
	if ignoreNotFound(err) != nil {
		return err
	}
	return nil
}

// Get reads one allocation by name.
func (s Store) Get(ctx context.Context, name string) (*Allocation, error) {
	u, err := s.Dynamic.Resource(GVR).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return fromObject(u)
}

// Taken is every address of network that has an allocation, read from
// the API server's cache (names only): a stale answer costs a conflict
// at create, never a duplicate.
func (s Store) Taken(ctx context.Context, network string, fresh bool) (map[netip.Addr]bool, error) {
	opts := metav1.ListOptions{LabelSelector: NetworkLabel + "=" + Key(network)}
	if !fresh {
		opts.ResourceVersion = "0"
	}
	list, err := cachedFirst(ctx, opts, func(ctx context.Context, opts metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
		return s.Metadata.Resource(GVR).List(ctx, opts)
	})
	if err != nil {
		return nil, err
	}
	taken := make(map[netip.Addr]bool, len(list.Items))
	for _, it := range list.Items {
		if a, ok := AddrOfName(network, it.Name); ok {
			taken[a] = true
		}
	}
	return taken, nil
}

// OfUser lists the allocations of network that attachment u uses.
func (s Store) OfUser(ctx context.Context, network string, u User) ([]*Allocation, error) {
	return s.list(ctx, NetworkLabel+"="+Key(network)+","+userLabel(network, u), "")
}

// OfUserCached is OfUser from the API server's cache, which may be a
// moment behind.
func (s Store) OfUserCached(ctx context.Context, network string, u User) ([]*Allocation, error) {
	return s.list(ctx, NetworkLabel+"="+Key(network)+","+userLabel(network, u), "0")
}

// OfNetwork lists every allocation of network.
func (s Store) OfNetwork(ctx context.Context, network string) ([]*Allocation, error) {
	return s.list(ctx, NetworkLabel+"="+Key(network), "")
}

func (s Store) list(ctx context.Context, selector, rv string) ([]*Allocation, error) {
	list, err := cachedFirst(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: rv},
		func(ctx context.Context, opts metav1.ListOptions) (*unstructured.UnstructuredList, error) {
			return s.Dynamic.Resource(GVR).List(ctx, opts)
		})
	if err != nil {
		return nil, err
	}
	out := make([]*Allocation, 0, len(list.Items))
	for i := range list.Items {
		a, err := fromObject(&list.Items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// cacheWait bounds a read from the API server's cache. The cache answers
// at once, except while it is being rebuilt (after a restart, or when it
// fell behind a burst of writes), when a read from it waits: the list is
// then asked again of etcd (a consistent read) with the time left.
const cacheWait = 1500 * time.Millisecond

func cachedFirst[T any](ctx context.Context, opts metav1.ListOptions, list func(context.Context, metav1.ListOptions) (T, error)) (T, error) {
	if opts.ResourceVersion != "0" {
		return list(ctx, opts)
	}
	cctx, cancel := context.WithTimeout(ctx, cacheWait)
	out, err := list(cctx, opts)
	stalled := errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	cancel()
	if err == nil || !stalled {
		return out, err
	}
	opts.ResourceVersion = ""
	return list(ctx, opts)
}
