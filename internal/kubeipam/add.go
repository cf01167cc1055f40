package kubeipam

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/tapbridge/tapbridge-cni/internal/allocation"
	"github.com/tapbridge/tapbridge-cni/internal/claim"
	"github.com/tapbridge/tapbridge-cni/internal/failpoint"
	"github.com/tapbridge/tapbridge-cni/internal/kubeapi"
	"github.com/tapbridge/tapbridge-cni/internal/pool"
	"github.com/tapbridge/tapbridge-cni/internal/undo"
)

// undoBudget bounds the rollback of a failed ADD: it runs after the
// call's own deadline may have passed.
const undoBudget = 3 * time.Second

// claimRaces bounds how often an ADD starts over after losing a race
// for a claim (see addOnce).
const claimRaces = 4

// errClaimRace: another ADD gave the claim its addresses first.
var errClaimRace = errors.New("another ADD wrote the IPAMClaim first")

// Add gives the attachment one address per range set: the claim's when
// the pod names one (taking any the claim lacks), the attachment's own
// from an earlier ADD of the same attachment, or new ones. On failure,
// what this call created or changed is undone.
func Add(ctx context.Context, cl *kubeapi.Client, c *Config) (*current.Result, error) {
	for range claimRaces - 1 {
		res, err := addOnce(ctx, cl, c)
		if !errors.Is(err, errClaimRace) {
			return res, err
		}
	}
	res, err := addOnce(ctx, cl, c)
	if errors.Is(err, errClaimRace) {
		return nil, fmt.Errorf("%w: %w %d times", kubeapi.ErrUnavailable, err, claimRaces)
	}
	return res, err
}

// addOnce is one attempt. Two ADDs of one claim that both find it without
// an address (pods of one VM started at once) would each make one; the
// claim decides: an ADD writes the claim's status only if the claim is
// unchanged since it read it, and the loser undoes what it did and starts
// over, to find the winner's (pick prefers what the status names). An ADD
// whose addresses the status already names writes nothing.
func addOnce(ctx context.Context, cl *kubeapi.Client, c *Config) (res *current.Result, err error) {
	o, err := resolveOwner(ctx, cl, c)
	if err != nil {
		return nil, err
	}
	store := allocation.Store{Dynamic: cl.Dynamic, Metadata: cl.Metadata}
	var u undo.Stack
	defer func() {
		if err != nil {
			if uerr := u.Run(); uerr != nil {
				err = fmt.Errorf("%w (and undo: %v; DEL or GC releases what is left)", err, uerr)
			}
		}
	}()
	held, err := heldBy(ctx, store, c, o)
	if err != nil {
		return nil, err
	}
	var mine []*allocation.Allocation
	for i, set := range c.Sets {
		a, err := takeFromSet(ctx, cl, store, c, o, set, held, &u)
		if err != nil {
			return nil, fmt.Errorf("range set %d (%s): %w", i, set, err)
		}
		mine = append(mine, a)
	}
	if err := failpoint.Hit("ipam-allocated"); err != nil {
		return nil, err
	}
	if ips := cidrs(c, mine); o.claim != nil && !slices.Equal(ips, o.claim.IPs) {
		err := claim.SetIPs(ctx, cl.Dynamic, o.claim, ips)
		if apierrors.IsConflict(err) {
			return nil, errClaimRace
		}
		if err != nil {
			return nil, kubeapi.Classify(err)
		}
		if err := failpoint.Hit("ipam-claim-status"); err != nil {
			return nil, err
		}
	}
	if o.claim != nil {
		sweepClaim(ctx, cl, store, c, o, mine)
	}
	return result(c, mine), nil
}

// sweepClaim deletes the claim's allocations that nobody uses and the
// claim does not name: what lost races left (a loser's own, kept by a
// user that has since left). Every ADD of a claim sweeps after its own
// undo-and-retry, so none outlives the race. Best effort: GC applies the
// same rule.
func sweepClaim(ctx context.Context, cl *kubeapi.Client, store allocation.Store, c *Config, o *owner, mine []*allocation.Allocation) {
	all, err := store.OfClaim(ctx, c.Network, o.claim.UID)
	if err != nil {
		return
	}
	for _, a := range all {
		if len(a.Spec.Users) == 0 && !slices.ContainsFunc(mine, func(m *allocation.Allocation) bool { return m.Name == a.Name }) {
			_ = release(ctx, cl, store, a, nil)
		}
	}
}

// heldBy lists what the owner already holds: the claim's allocations
// (a consistent read: a claim must never get a second address), or the
// attachment's own from the API server's cache (a repeated ADD gets the
// same addresses back; a cache a moment behind costs at worst a second
// allocation of the attachment, which its DEL releases with the first).
func heldBy(ctx context.Context, store allocation.Store, c *Config, o *owner) ([]*allocation.Allocation, error) {
	var held []*allocation.Allocation
	var err error
	if o.claim != nil {
		held, err = store.OfClaim(ctx, c.Network, o.claim.UID)
	} else {
		held, err = store.OfUserCached(ctx, c.Network, o.user)
	}
	if err != nil {
		return nil, fmt.Errorf("list allocations of network %s: %w", c.Network, kubeapi.Classify(err))
	}
	return held, nil
}

// takeFromSet returns the set's address for the owner: one it holds
// (adding this attachment to its users), else a new one.
func takeFromSet(ctx context.Context, cl *kubeapi.Client, store allocation.Store, c *Config, o *owner, set pool.Set, held []*allocation.Allocation, u *undo.Stack) (a *allocation.Allocation, err error) {
	if a := pick(o, set, held); a != nil {
		if a.Has(c.Network, o.user) {
			return a, nil
		}
		b, err := addUser(ctx, store, a, o.user)
		if err != nil {
			return nil, err
		}
		u.Push("remove "+o.user.ContainerID+" from "+b.Name, func() error {
			uctx, cancel := undoContext(ctx)
			defer cancel()
			return removeUser(uctx, store, b, o.user)
		})
		return b, failpoint.Hit("ipam-user-added")
	}
	if a, err = allocate(ctx, store, c, o, set); err != nil {
		return nil, err
	}
	// Undone as DEL would: a pod that joined it meanwhile (a claim's
	// allocation) keeps it, and the last user to leave deletes it.
	u.Push("release "+a.Name, func() error {
		uctx, cancel := undoContext(ctx)
		defer cancel()
		return release(uctx, cl, store, a, []allocation.User{o.user})
	})
	return a, failpoint.Hit("ipam-created")
}

// pick is the held allocation of set to use: the one the claim's status
// names (a race's winner), else the first by name, so every ADD of the
// claim picks the same one.
func pick(o *owner, set pool.Set, held []*allocation.Allocation) *allocation.Allocation {
	var best *allocation.Allocation
	for _, a := range held {
		if _, ok := set.Find(a.Addr()); !ok {
			continue
		}
		if o.claim != nil && o.claim.Names(a.Addr()) {
			return a
		}
		if best == nil || a.Name < best.Name {
			best = a
		}
	}
	return best
}

// allocate creates an allocation for a free address of set. The list of
// taken addresses comes from the API server's cache; an AlreadyExists
// (a stale list, or another node first) moves on to the next candidate.
// Only a fresh list that shows the set full is "full".
func allocate(ctx context.Context, store allocation.Store, c *Config, o *owner, set pool.Set) (*allocation.Allocation, error) {
	for _, fresh := range []bool{false, true} {
		taken, err := store.Taken(ctx, c.Network, fresh)
		if err != nil {
			return nil, fmt.Errorf("list allocations of network %s: %w", c.Network, kubeapi.Classify(err))
		}
		var got *allocation.Allocation
		var createErr error
		set.Walk(taken, func(addr netip.Addr, _ pool.Range) bool {
			if err := failpoint.Hit("ipam-before-create"); err != nil {
				createErr = err
				return false
			}
			got, createErr = store.Create(ctx, &allocation.Allocation{Spec: allocation.Spec{
				Network: c.Network, Address: addr.String(), Claim: o.claimRef(), Users: []allocation.User{o.user}}})
			if apierrors.IsAlreadyExists(createErr) {
				taken[addr], createErr = true, nil
				return true
			}
			return false
		})
		if createErr != nil {
			return nil, fmt.Errorf("create allocation: %w", kubeapi.Classify(createErr))
		}
		if got != nil {
			return got, nil
		}
	}
	return nil, fmt.Errorf("%w: every address is allocated", ErrFull)
}

// addUser adds u to a claim's allocation, re-reading it after a conflict.
// An allocation gone meanwhile was a lost race's, undone: errClaimRace
// starts the ADD over.
func addUser(ctx context.Context, store allocation.Store, a *allocation.Allocation, u allocation.User) (*allocation.Allocation, error) {
	name := a.Name
	for {
		b, err := store.Update(ctx, a.AddUser(u))
		if err == nil {
			return b, nil
		}
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%s is gone: %w", name, errClaimRace)
		}
		if !apierrors.IsConflict(err) {
			return nil, fmt.Errorf("add user to %s: %w", name, kubeapi.Classify(err))
		}
		a, err = store.Get(ctx, name)
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%s is gone: %w", name, errClaimRace)
		}
		if err != nil {
			return nil, fmt.Errorf("re-read %s: %w", name, kubeapi.Classify(err))
		}
	}
}

// removeUser takes u off a claim's allocation (re-reading after a
// conflict); nothing to do when it is gone.
func removeUser(ctx context.Context, store allocation.Store, a *allocation.Allocation, u allocation.User) error {
	for {
		if !a.Has(a.Spec.Network, u) {
			return nil
		}
		_, err := store.Update(ctx, a.RemoveUser(u))
		if err == nil || apierrors.IsNotFound(err) {
			return nil
		}
		if !apierrors.IsConflict(err) {
			return fmt.Errorf("remove user from %s: %w", a.Name, kubeapi.Classify(err))
		}
		if a, err = store.Get(ctx, a.Name); apierrors.IsNotFound(err) {
			return nil
		} else if err != nil {
			return fmt.Errorf("re-read %s: %w", a.Name, kubeapi.Classify(err))
		}
	}
}

func cidrs(c *Config, allocs []*allocation.Allocation) []string {
	var out []string
	for _, ip := range result(c, allocs).IPs {
		out = append(out, ip.Address.String())
	}
	return out
}

// result is the CNI result: each address with its subnet's prefix length
// and its range's gateway, then the config's routes and DNS.
func result(c *Config, allocs []*allocation.Allocation) *current.Result {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, Routes: c.Routes, DNS: c.DNS}
	for _, a := range allocs {
		addr := a.Addr()
		for _, set := range c.Sets {
			r, ok := set.Find(addr)
			if !ok {
				continue
			}
			ipc := &current.IPConfig{Address: net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(r.Subnet.Bits(), addr.BitLen())}}
			if r.Gateway.IsValid() {
				ipc.Gateway = r.Gateway.AsSlice()
			}
			res.IPs = append(res.IPs, ipc)
			break
		}
	}
	return res
}

// undoContext outlives the call's own deadline by undoBudget.
func undoContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), undoBudget)
}
