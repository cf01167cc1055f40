package kubeipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/tapbridge/tapbridge-cni/internal/allocation"
	"github.com/tapbridge/tapbridge-cni/internal/failpoint"
	"github.com/tapbridge/tapbridge-cni/internal/kubeapi"
	"github.com/tapbridge/tapbridge-cni/internal/pool"
)

// Del releases what the attachment uses: its own addresses go, a claim's
// address loses this user and goes only when the claim is gone and no
// other pod uses it. Nothing to release is success, as is a second DEL.
func Del(ctx context.Context, cl *kubeapi.Client, c *Config) error {
	store := allocation.Store{Dynamic: cl.Dynamic, Metadata: cl.Metadata}
	user := allocation.User{ContainerID: c.Attachment.ContainerID, IfName: c.Attachment.IfName, Node: c.Node}
	allocs, err := usedBy(ctx, store, c, user)
	if err != nil {
		return err
	}
	if err := failpoint.Hit("ipam-del-listed"); err != nil {
		return err
	}
	var errs []error
	for _, a := range allocs {
		errs = append(errs, release(ctx, cl, store, a, []allocation.User{user}))
	}
	return errors.Join(errs...)
}

// usedBy finds the attachment's allocations: by name from prevResult
// (libcni sends the cached ADD result with DEL) when it has an address
// for every range set, which costs one GET each; otherwise by a
// consistent list of the network's allocations with the user's label.
func usedBy(ctx context.Context, store allocation.Store, c *Config, user allocation.User) ([]*allocation.Allocation, error) {
	prev, err := prevIPs(c)
	if err != nil {
		return nil, err
	}
	var byName []*allocation.Allocation
	for _, set := range c.Sets {
		a, err := fromPrev(ctx, store, c, set.Find, prev, user)
		if err != nil {
			return nil, err
		}
		if a == nil {
			byName = nil
			break
		}
		byName = append(byName, a)
	}
	if byName != nil {
		return byName, nil
	}
	allocs, err := store.OfUser(ctx, c.Network, user)
	if err != nil {
		return nil, fmt.Errorf("list allocations of network %s: %w", c.Network, kubeapi.Classify(err))
	}
	return allocs, nil
}

// fromPrev is the allocation of the prevResult address in one set, if it
// is the attachment's; nil sends DEL to the list.
func fromPrev(ctx context.Context, store allocation.Store, c *Config, find func(netip.Addr) (pool.Range, bool), prev []netip.Addr, user allocation.User) (*allocation.Allocation, error) {
	for _, addr := range prev {
		if _, ok := find(addr); !ok {
			continue
		}
		a, err := store.Get(ctx, allocation.Name(c.Network, addr))
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read allocation of %s: %w", addr, kubeapi.Classify(err))
		}
		if !a.Has(c.Network, user) {
			return nil, nil
		}
		return a, nil
	}
	return nil, nil
}

// release takes users off a and deletes it once it has no owner left: no
// user for an attachment's address, no user and no claim keeping it for
// a claim's.
// A conflict (someone changed a) re-reads it and decides again.
func release(ctx context.Context, cl *kubeapi.Client, store allocation.Store, a *allocation.Allocation, users []allocation.User) error {
	for {
		b := a
		for _, u := range users {
			b = b.RemoveUser(u)
		}
		err := releaseOnce(ctx, cl, store, a, b)
		if err == nil || apierrors.IsNotFound(err) {
			return nil
		}
		if !apierrors.IsConflict(err) {
			return fmt.Errorf("release %s: %w", a, kubeapi.Classify(err))
		}
		if a, err = store.Get(ctx, a.Name); apierrors.IsNotFound(err) {
			return nil
		} else if err != nil {
			return fmt.Errorf("re-read %s: %w", a.Name, kubeapi.Classify(err))
		}
	}
}

// releaseOnce writes b (a without the released users) or deletes a when
// b has no users left and no claim keeps it (claimKeeps).
func releaseOnce(ctx context.Context, cl *kubeapi.Client, store allocation.Store, a, b *allocation.Allocation) error {
	if len(b.Spec.Users) > 0 {
		if len(b.Spec.Users) == len(a.Spec.Users) {
			return nil
		}
		_, err := store.Update(ctx, b)
		return err
	}
	if a.Spec.Claim != nil {
		keep, err := claimKeeps(ctx, cl, a)
		if err != nil {
			return err
		}
		if keep {
			if len(a.Spec.Users) == 0 {
				return nil
			}
			_, err := store.Update(ctx, b)
			return err
		}
	}
	return store.Delete(ctx, a)
}
