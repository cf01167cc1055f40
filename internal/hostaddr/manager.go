package hostaddr

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/internal/bridge"
	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// ErrNoAddress is returned when no address can be found for a subnet.
var ErrNoAddress = errors.New("no host address available")

// Prober reports whether another host on the L2 already uses addr.
type Prober func(ctx context.Context, ifindex int, addr netip.Addr) (bool, error)

// Bridge is what Manager needs of the host bridge. *bridge.Bridge is the
// real one; a test's fake must answer as it does: AddAddr of an address
// already there fails with EEXIST, DelAddr of one that is not there
// returns nil (the kernel's EADDRNOTAVAIL, which a repeated DEL sees).
// AddAddr's dad false asks the kernel to skip IPv6 duplicate address
// detection (IFA_F_NODAD); IPv4 has none.
type Bridge interface {
	Device() (name string, index int)
	Addrs(family int) ([]bridge.Addr, error)
	AddAddr(p netip.Prefix, dad bool) error
	DelAddr(p netip.Prefix) error
	Promotion() (bridge.Promotion, error)
	SetPromotion(value string) error
}

// Manager keeps one bridge's host addresses. Callers hold the bridge lock
// (state.Bridge.Lock) around every method.
//
// State holds, per subnet, the users (the reference count) and the owned
// address (the one tapbridge added, recorded before it is added, so a
// crash in between still lets Release remove it). An admin's address is
// used with no owned address and is never touched, nor lost when the
// owned one goes (delOwned).
type Manager struct {
	Bridge Bridge // nil when the bridge is gone: state is still released
	State  state.Bridge
	Policy Policy
	Probe  Prober
	// PickTimeout bounds the pick of one address (pool probes, IPv6 DAD),
	// which runs under the bridge lock; 0: no bound (tests).
	PickTimeout time.Duration

	restored bool // restoreSaved has run
}

// Acquire records that attachment key uses subnet and makes sure the
// bridge has an address on it.
func (m *Manager) Acquire(ctx context.Context, key string, subnet netip.Prefix) error {
	if err := m.restoreSaved(); err != nil {
		return err
	}
	sub := m.State.Subnet(subnet)
	if err := sub.Users().Add(key); err != nil {
		return err
	}
	owned, ok, err := sub.Owned()
	switch {
	case err != nil:
		return err
	case ok:
		return m.ensurePresent(owned)
	}
	if _, admin, err := m.findAddr(sub.Prefix.Addr(), sub.Prefix.Contains); err != nil || admin {
		return err
	}
	return m.take(ctx, sub)
}

// ensurePresent re-adds an owned address that vanished (a reboot, or an
// admin's `ip addr flush`), since attachments still rely on it.
func (m *Manager) ensurePresent(p netip.Prefix) error {
	if _, present, err := m.findAddr(p.Addr(), isAddr(p.Addr())); err != nil || present {
		return err
	}
	return m.Bridge.AddAddr(p, !m.Policy.isStatic(p.Addr()))
}

// findAddr returns the bridge's first address of like's family that
// match accepts.
func (m *Manager) findAddr(like netip.Addr, match func(netip.Addr) bool) (bridge.Addr, bool, error) {
	addrs, err := m.Bridge.Addrs(family(like))
	if err != nil {
		return bridge.Addr{}, false, err
	}
	for _, a := range addrs {
		if match(a.Prefix.Addr()) {
			return a, true, nil
		}
	}
	return bridge.Addr{}, false, nil
}

func isAddr(want netip.Addr) func(netip.Addr) bool {
	return func(a netip.Addr) bool { return a == want }
}

func family(a netip.Addr) int {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func (m *Manager) bridgeName() string {
	name, _ := m.Bridge.Device()
	return name
}

// take picks a free candidate and adds it, within PickTimeout: the
// others waiting for the bridge lock give up on a holder after
// lockTimeout.
func (m *Manager) take(ctx context.Context, sub state.Subnet) error {
	subnet := sub.Prefix
	cands := Candidates(m.Policy, subnet)
	if len(cands) == 0 {
		return fmt.Errorf("%w for subnet %s on node %q: the bridge %s has none, hostAddress.static[%q] has none in it and hostAddress.pool has no range in it",
			ErrNoAddress, subnet, m.Policy.Node, m.bridgeName(), m.Policy.Node)
	}
	if m.PickTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.PickTimeout)
		defer cancel()
	}
	var tried []string
	for _, c := range cands {
		err := m.tryOne(ctx, sub, c)
		if err == nil {
			return nil
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return m.pickTimedOut(subnet, append(tried, c.Addr().String()), err)
		}
		if !errors.Is(err, errInUse) {
			return err
		}
		tried = append(tried, c.Addr().String())
	}
	return fmt.Errorf("%w for subnet %s on node %q: every candidate is in use on the L2 (%s)",
		ErrNoAddress, subnet, m.Policy.Node, strings.Join(tried, ", "))
}

var errInUse = errors.New("address in use")

func (m *Manager) pickTimedOut(subnet netip.Prefix, tried []string, err error) error {
	return fmt.Errorf("%w for subnet %s on node %q: hostAddress.pool's candidates were not all probed within %s, half of lockTimeout, since the probes hold the bridge lock (tried %s: %w); raise lockTimeout or lower hostAddress.probeWait",
		ErrNoAddress, subnet, m.Policy.Node, m.PickTimeout, strings.Join(tried, ", "), err)
}

// tryOne probes c, records it as owned, then adds it. Only pool picks are
// probed (under the bridge lock): a node's static address is the admin's
// explicit choice for that node, so an IPv6 one is added without DAD
// (usable at once, where DAD would hold the first ADD of its subnet for
// over a second). An IPv6 pool pick relies on the kernel's own DAD, which
// runs when the address is added.
func (m *Manager) tryOne(ctx context.Context, sub state.Subnet, c netip.Prefix) error {
	static := m.Policy.isStatic(c.Addr())
	if c.Addr().Is4() && m.Probe != nil && !static {
		_, index := m.Bridge.Device()
		inUse, err := m.Probe(ctx, index, c.Addr())
		if err != nil {
			return fmt.Errorf("probe %s: %w", c.Addr(), err)
		}
		if inUse {
			return errInUse
		}
	}
	if err := sub.CreateOwned(c); err != nil {
		return err
	}
	// A failed add removes nothing: on EEXIST the address is someone
	// else's, added since findAddr looked.
	if err := m.Bridge.AddAddr(c, !static); err != nil {
		return errors.Join(err, sub.RemoveOwned())
	}
	if c.Addr().Is6() && !static {
		if err := m.waitDAD(ctx, c); err != nil {
			return errors.Join(err, m.delOwned(c), sub.RemoveOwned())
		}
	}
	return nil
}

// waitDAD waits until the kernel's duplicate address detection is done.
func (m *Manager) waitDAD(ctx context.Context, p netip.Prefix) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		a, ok, err := m.findAddr(p.Addr(), isAddr(p.Addr()))
		switch {
		case err != nil:
			return err
		case !ok:
			return fmt.Errorf("address %s vanished from %s during DAD", p, m.bridgeName())
		case a.DADFailed():
			return fmt.Errorf("%s: %w (IPv6 DAD failed)", p.Addr(), errInUse)
		case !a.Tentative():
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for DAD on %s: %w", p.Addr(), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Release drops key's use of subnet; the last user removes tapbridge's
// address (never the admin's).
func (m *Manager) Release(key string, subnet netip.Prefix) error {
	if err := m.restoreSaved(); err != nil {
		return err
	}
	sub := m.State.Subnet(subnet)
	empty, err := sub.Users().Remove(key)
	if err != nil || !empty {
		return err
	}
	return m.dropOwned(sub)
}

func (m *Manager) dropOwned(sub state.Subnet) error {
	owned, ok, err := sub.Owned()
	if err != nil {
		return err
	}
	if ok && m.Bridge != nil {
		if err := m.delOwned(owned); err != nil {
			return err
		}
	}
	return sub.RemoveOwned()
}

// ReleaseAll drops key from every subnet it uses (DEL needs no prevResult).
// It also finishes a release that a crash cut short after emptying a
// subnet's users but before removing its address: once key is no longer
// a user, the retried DEL would otherwise leave that address for good.
func (m *Manager) ReleaseAll(key string) error {
	if err := m.restoreSaved(); err != nil {
		return err
	}
	subnets, err := m.State.Subnets()
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range subnets {
		if s.Users().Has(key) {
			errs = append(errs, m.Release(key, s.Prefix))
		} else {
			errs = append(errs, m.dropIfUnused(s))
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) dropIfUnused(sub state.Subnet) error {
	empty, err := sub.Users().RemoveIfEmpty()
	if err != nil || !empty {
		return err
	}
	return m.dropOwned(sub)
}

// Verify checks that key is counted on subnet and that the bridge has an
// address there (CHECK).
func (m *Manager) Verify(key string, subnet netip.Prefix) error {
	sub := m.State.Subnet(subnet)
	_, ok, err := m.findAddr(sub.Prefix.Addr(), sub.Prefix.Contains)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("bridge %s has no host address in subnet %s", m.bridgeName(), sub.Prefix)
	}
	if !sub.Users().Has(key) {
		return fmt.Errorf("attachment %s is not counted as a user of subnet %s on bridge %s", key, sub.Prefix, m.bridgeName())
	}
	return nil
}

// Reconcile drops users that are no longer live, removes addresses nobody
// uses and restores owned addresses that live attachments still need (GC,
// e.g. after a reboot wiped the bridge). Cost grows with the node's
// attachments, which is fine for GC and for nothing else.
func (m *Manager) Reconcile(live func(key string) bool) error {
	if err := m.restoreSaved(); err != nil {
		return err
	}
	subnets, err := m.State.Subnets()
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range subnets {
		errs = append(errs, m.reconcileSubnet(s, live))
	}
	return errors.Join(errs...)
}

func (m *Manager) reconcileSubnet(sub state.Subnet, live func(string) bool) error {
	users := sub.Users()
	members, err := users.Members()
	if err != nil {
		return err
	}
	for _, key := range members {
		if !live(key) {
			if _, err := users.Remove(key); err != nil {
				return err
			}
		}
	}
	empty, err := users.RemoveIfEmpty()
	if err != nil {
		return err
	}
	if empty {
		return m.dropOwned(sub)
	}
	owned, ok, err := sub.Owned()
	if err != nil || !ok || m.Bridge == nil {
		return err
	}
	return m.ensurePresent(owned)
}
