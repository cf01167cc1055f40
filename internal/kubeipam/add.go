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
	want, err := c.Requests()
	if err != nil {
		return nil, err
	}
	for range claimRaces - 1 {
		res, err := addOnce(ctx, cl, c, want)
		if !errors.Is(err, errClaimRace) {
			return res, err
		}
	}
	res, err := addOnce(ctx, cl, c, want)
	if errors.Is(err, errClaimRace) {
		return nil, fmt.Errorf("%w: %w %d times", kubeapi.ErrUnavailable, err, claimRaces)
	}
	return res, err
}

// addOnce is one attempt. Two ADDs of one claim that both find it without
// an address (pods of one VM started at once) would each make one; the
// claim decides: an ADD writes the claim's status only if the claim is
// unchanged since it read it, and the loser undoes what it did and starts
// over, to find the winner's in the status. An ADD whose addresses the
// status already names writes nothing. Both usually pick the same address
// anyway (allocate tries the claim's own sequence of candidates), and then
// the loser only takes itself off the winner's allocation.
func addOnce(ctx context.Context, cl *kubeapi.Client, c *Config, want []netip.Addr) (res *current.Result, err error) {
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
	t := taker{ctx: ctx, cl: cl, store: store, c: c, o: o, u: &u, want: want,
		look: o.claim == nil && len(held) == 0}
	var mine []*allocation.Allocation
	for i, set := range c.Sets {
		a, err := t.fromSet(i, held)
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
	return result(c, mine), nil
}

// heldBy reads what the owner already holds, without a list of the
// network. A claim's addresses are the ones its status.ips names (the
// one record of them, rewritten by any ADD whose addresses differ from
// it: the claim had none, or it names some outside this config's ranges
// or none for a set, after a NAD edit; and only if the claim is unchanged
// since read, so two ADDs of one claim never both write), each
// read by name. An attachment's come from a list selected by its own
// label, served from the API server's cache: one request whose answer
// holds only the attachment's allocations (none but on a repeated ADD),
// and it finds an earlier ADD's address wherever that one landed, which
// no lookup by name can (the address an ADD gets depends on what was
// taken at the time). For a cache a moment behind (an empty answer on a
// repeated ADD), allocate reads each taken address it tries: its
// sequence, seeded by the attachment, is the one the first ADD walked,
// so it finds the first ADD's allocation on any of its candidates (not
// one a nearly full set's listed walk gave; see allocate).
func heldBy(ctx context.Context, store allocation.Store, c *Config, o *owner) ([]*allocation.Allocation, error) {
	if o.claim == nil {
		held, err := store.OfUserCached(ctx, c.Network, o.user)
		if err != nil {
			return nil, fmt.Errorf("list allocations of attachment %s/%s: %w", o.user.ContainerID, o.user.IfName, kubeapi.Classify(err))
		}
		return held, nil
	}
	var held []*allocation.Allocation
	for _, addr := range o.claim.Addrs() {
		if setOf(c.Sets, addr) < 0 {
			continue // an older config's: the status is rewritten with this one's
		}
		a, err := store.Get(ctx, allocation.Name(c.Network, addr))
		if apierrors.IsNotFound(err) {
			continue // fromSet makes it again, at the same address
		}
		if err != nil {
			return nil, fmt.Errorf("read allocation of %s: %w", addr, kubeapi.Classify(err))
		}
		if !o.owns(a) {
			return nil, fmt.Errorf("%w: %s names %s in status.ips, but it is %s", ErrTaken, o.claim, addr, holder(a))
		}
		held = append(held, a)
	}
	return held, nil
}

// taker makes or finds one ADD's allocations, pushing the undo of each
// change it makes.
type taker struct {
	ctx   context.Context
	cl    *kubeapi.Client
	store allocation.Store
	c     *Config
	o     *owner
	u     *undo.Stack
	want  []netip.Addr // the requested address per set (Config.Requests)
	// look: read an attachment's taken addresses (see allocate).
	look bool
}

// fromSet returns set i's address for the owner: the claim's (joining
// it), the attachment's own from an earlier ADD, the requested one, or a
// new one. A request must agree with what the owner already holds.
func (t *taker) fromSet(i int, held []*allocation.Allocation) (*allocation.Allocation, error) {
	set, want := t.c.Sets[i], t.want[i]
	if t.o.claim != nil {
		if have, ok := t.o.claimAddr(set); ok {
			if want.IsValid() && want != have {
				return nil, fmt.Errorf("%w: requested %s, but %s holds %s (status.ips)", ErrTaken, want, t.o.claim, have)
			}
			if a := inSet(set, held, have); a != nil && a.Addr() == have {
				return t.join(a)
			}
			want = have // its allocation is gone: made again at the claim's address
		}
	} else if a := inSet(set, held, want); a != nil {
		if want.IsValid() && want != a.Addr() {
			return nil, fmt.Errorf("%w: requested %s, but attachment %s/%s holds %s from an earlier ADD (DEL it first)",
				ErrTaken, want, t.o.user.ContainerID, t.o.user.IfName, a.Addr())
		}
		return a, nil
	}
	if want.IsValid() {
		return t.exact(want)
	}
	return t.allocate(i)
}

// inSet returns the held allocation of set at addr, or else the first
// one held in set (an attachment may hold two after a stale cache).
func inSet(set pool.Set, held []*allocation.Allocation, addr netip.Addr) *allocation.Allocation {
	var first *allocation.Allocation
	for _, a := range held {
		if _, ok := set.Find(a.Addr()); !ok {
			continue
		}
		if a.Addr() == addr {
			return a
		}
		if first == nil {
			first = a
		}
	}
	return first
}

// addUser adds u to a claim's allocation, re-reading it after a conflict.
// An allocation gone meanwhile was a lost race's, undone: errClaimRace
// starts the ADD over. So does one deleted and made again in between (a
// new UID): it may be another owner's now, and the ADD must not add the
// claim's pod to it; starting over judges it afresh.
func addUser(ctx context.Context, store allocation.Store, a *allocation.Allocation, u allocation.User) (*allocation.Allocation, error) {
	name, uid := a.Name, a.UID
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
		if a.UID != uid {
			return nil, fmt.Errorf("%s was deleted and made again: %w", name, errClaimRace)
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
