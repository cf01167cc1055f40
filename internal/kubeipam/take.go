package kubeipam

import (
	"fmt"
	"net/netip"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/tapbridge/tapbridge-cni/internal/allocation"
	"github.com/tapbridge/tapbridge-cni/internal/failpoint"
	"github.com/tapbridge/tapbridge-cni/internal/kubeapi"
	"github.com/tapbridge/tapbridge-cni/internal/pool"
)

// candidateTries bounds the creates an ADD tries before it lists the
// network: with a set less than half full, all eight fail one ADD in 256.
const candidateTries = 8

// exactTries bounds how often a requested address is found taken and
// then gone again before the ADD gives up (try again).
const exactTries = 3

// allocate creates an allocation at a free address of set i. It tries
// candidates first, each one create and no read: a sequence the owner
// seeds (owner.seed), so in a set that is not nearly full an ADD
// costs the same few requests whatever the number of allocations. For a
// claim an AlreadyExists is read: the address may be the claim's already
// (another pod of the VM, or an ADD killed before it wrote the status),
// and is then joined. Only when every try fails (a nearly full set) does
// it list the network's names to find a free one, or to say "full".
// For an attachment whose cached list in heldBy came back empty, every
// taken address it tries is read too: an earlier ADD of the same
// attachment the cache had not caught up with may have landed on any of
// them (the first candidate taken then, the next free one), and a second
// allocation would hand out another address than the first ADD's. In a
// set that is not nearly full few candidates are taken, so this costs
// few reads, but every new attachment's ADD pays one GET per taken
// candidate. (In a nearly full set the earlier
// ADD may have gone past its candidates to a listed walk from a random
// start, or an earlier candidate may have been freed since; a repeated
// ADD there can still make a second allocation, which only a GC with
// the node's list frees.)
func (t *taker) allocate(i int) (*allocation.Allocation, error) {
	var got *allocation.Allocation
	var err error
	seed := t.o.seed(t.c.Network, i)
	t.c.Sets[i].Candidates(seed, candidateTries, func(addr netip.Addr, _ pool.Range) bool {
		got, err = t.try(addr)
		return got == nil && err == nil
	})
	if got != nil || err != nil {
		return got, err
	}
	return t.allocateListed(i)
}

// allocateListed walks the set from a random start past the addresses a
// list of names shows taken, from the API server's cache first; an
// AlreadyExists (a stale list, or another node first) moves on to the
// next. Only a fresh list that shows the set full is "full".
func (t *taker) allocateListed(i int) (*allocation.Allocation, error) {
	for _, fresh := range []bool{false, true} {
		taken, err := t.store.Taken(t.ctx, t.c.Network, fresh)
		if err != nil {
			return nil, fmt.Errorf("list allocations of network %s: %w", t.c.Network, kubeapi.Classify(err))
		}
		var got *allocation.Allocation
		t.c.Sets[i].Walk(taken, func(addr netip.Addr, _ pool.Range) bool {
			got, err = t.try(addr)
			return got == nil && err == nil
		})
		if got != nil || err != nil {
			return got, err
		}
	}
	return nil, fmt.Errorf("%w: every address is allocated", ErrFull)
}

// try creates the owner's allocation at addr; nil, nil when the address
// is another owner's. A claim's AlreadyExists is always read (it may be
// the claim's), an attachment's only when t.look says so (see allocate).
func (t *taker) try(addr netip.Addr) (*allocation.Allocation, error) {
	mine, other, err := t.createOrRead(addr, t.o.claim != nil || t.look)
	if mine != nil || other == nil || err != nil {
		return mine, err
	}
	return t.adopt(other)
}

// createOrRead creates the owner's allocation at addr (mine). When the
// address is taken and read is set, it reads the allocation there
// (other); neither when it was released meanwhile, or not read.
func (t *taker) createOrRead(addr netip.Addr, read bool) (mine, other *allocation.Allocation, err error) {
	a, err := t.create(addr)
	if err == nil || !apierrors.IsAlreadyExists(err) {
		return a, nil, err
	}
	if !read {
		return nil, nil, nil
	}
	b, err := t.store.Get(t.ctx, allocation.Name(t.c.Network, addr))
	if apierrors.IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read allocation of %s: %w", addr, kubeapi.Classify(err))
	}
	return nil, b, nil
}

// adopt returns b if it is the owner's already: the claim's (joined), or
// this attachment's own; nil, nil if it is another owner's.
func (t *taker) adopt(b *allocation.Allocation) (*allocation.Allocation, error) {
	switch {
	case t.o.claim != nil && t.o.owns(b):
		return t.join(b)
	case t.o.claim == nil && b.Spec.Claim == nil && b.Has(t.c.Network, t.o.user):
		return b, nil
	}
	return nil, nil
}

// exact takes the requested address (or the claim's, when its allocation
// went): created, or, when it exists, joined if it is the claim's, kept
// if it is this attachment's own (a repeated ADD the cache had not seen),
// else refused, naming its holder.
func (t *taker) exact(addr netip.Addr) (*allocation.Allocation, error) {
	for range exactTries {
		mine, other, err := t.createOrRead(addr, true)
		if mine != nil || err != nil {
			return mine, err
		}
		if other == nil {
			continue // released meanwhile: create again
		}
		if a, err := t.adopt(other); a != nil || err != nil {
			return a, err
		}
		return nil, fmt.Errorf("%w: %s is %s", ErrTaken, addr, holder(other))
	}
	return nil, fmt.Errorf("%w: %s was released and taken again %d times", kubeapi.ErrUnavailable, addr, exactTries)
}

// create makes the owner's allocation at addr; its undo is DEL's release
// (a pod that joined it meanwhile, a claim's, keeps it). Errors other
// than AlreadyExists are classified.
func (t *taker) create(addr netip.Addr) (*allocation.Allocation, error) {
	if err := failpoint.Hit("ipam-before-create"); err != nil {
		return nil, err
	}
	a, err := t.store.Create(t.ctx, &allocation.Allocation{Spec: allocation.Spec{
		Network: t.c.Network, Address: addr.String(), Claim: t.o.claimRef(), Users: []allocation.User{t.o.user}}})
	if apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("create allocation of %s: %w", addr, kubeapi.Classify(err))
	}
	t.pushRelease(a)
	return a, failpoint.Hit("ipam-created")
}

// join adds the attachment to a claim's allocation. Undone as DEL would:
// the allocation goes only if no other pod uses it and the claim does
// not name it (a lost race's).
func (t *taker) join(a *allocation.Allocation) (*allocation.Allocation, error) {
	if a.Has(t.c.Network, t.o.user) {
		return a, nil
	}
	b, err := addUser(t.ctx, t.store, a, t.o.user)
	if err != nil {
		return nil, err
	}
	t.pushRelease(b)
	return b, failpoint.Hit("ipam-user-added")
}

func (t *taker) pushRelease(a *allocation.Allocation) {
	t.u.Push("release "+a.Name, func() error {
		uctx, cancel := undoContext(t.ctx)
		defer cancel()
		return release(uctx, t.cl, t.store, a, []allocation.User{t.o.user})
	})
}

// holder says whose an allocation is, for an error message.
func holder(a *allocation.Allocation) string {
	if c := a.Spec.Claim; c != nil {
		return fmt.Sprintf("held by IPAMClaim %s/%s (IPAllocation %s)", c.Namespace, c.Name, a.Name)
	}
	if len(a.Spec.Users) == 0 {
		return fmt.Sprintf("held by IPAllocation %s (being released)", a.Name)
	}
	u := a.Spec.Users[0]
	pod := ""
	if u.Pod != nil {
		pod = fmt.Sprintf(", pod %s/%s", u.Pod.Namespace, u.Pod.Name)
	}
	return fmt.Sprintf("held by attachment %s/%s (node %s%s; IPAllocation %s)", u.ContainerID, u.IfName, u.Node, pod, a.Name)
}
