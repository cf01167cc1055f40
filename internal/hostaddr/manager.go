package hostaddr

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/internal/bridge"
	"github.com/tapbridge/tapbridge-cni/internal/store"
)

// ErrNoAddress is returned when no address can be found for a subnet.
var ErrNoAddress = errors.New("no host address available")

// Prober reports whether another host on the L2 already uses addr.
type Prober func(ctx context.Context, ifindex int, addr netip.Addr) (bool, error)

// Manager keeps one bridge's host addresses. Callers hold the bridge lock
// (store.LockBridge) around every method.
//
// On disk, under Dir/subnets/<subnet>/: users/<attachment key> (a store.Set:
// the reference count) and owned (the address tapbridge added, written
// before it is added, so a crash in between still lets Release remove it).
// An admin's address is used without an owned file and is never touched.
type Manager struct {
	Bridge *bridge.Bridge
	Dir    string
	Policy Policy
	Probe  Prober
}

func (m *Manager) subnetDir(subnet netip.Prefix) string {
	return filepath.Join(m.Dir, "subnets", strings.ReplaceAll(subnet.String(), "/", "_"))
}

func (m *Manager) users(subnet netip.Prefix) store.Set {
	return store.Set{Dir: filepath.Join(m.subnetDir(subnet), "users")}
}

func (m *Manager) ownedPath(subnet netip.Prefix) string {
	return filepath.Join(m.subnetDir(subnet), "owned")
}

// Acquire records that attachment key uses subnet and makes sure the
// bridge has an address on it.
func (m *Manager) Acquire(ctx context.Context, key string, subnet netip.Prefix) error {
	subnet = subnet.Masked()
	if err := m.users(subnet).Add(key); err != nil {
		return err
	}
	owned, ok, err := m.owned(subnet)
	switch {
	case err != nil:
		return err
	case ok:
		return m.ensurePresent(owned)
	}
	if _, admin, err := m.findAddr(subnet.Addr(), subnet.Contains); err != nil || admin {
		return err
	}
	return m.take(ctx, subnet)
}

// owned reads the address tapbridge added on subnet, if any.
func (m *Manager) owned(subnet netip.Prefix) (netip.Prefix, bool, error) {
	data, err := store.ReadFile(m.ownedPath(subnet))
	if errors.Is(err, store.ErrNotFound) {
		return netip.Prefix{}, false, nil
	}
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("read owned address of %s: %w", subnet, err)
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(string(data)))
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("decode owned address of %s: %w", subnet, err)
	}
	return p, true, nil
}

// ensurePresent re-adds an owned address that vanished (a reboot, or an
// admin's `ip addr flush`), since attachments still rely on it.
func (m *Manager) ensurePresent(p netip.Prefix) error {
	if _, present, err := m.findAddr(p.Addr(), isAddr(p.Addr())); err != nil || present {
		return err
	}
	return m.Bridge.AddAddr(p)
}

// findAddr returns the bridge's first address of like's family that
// match accepts.
func (m *Manager) findAddr(like netip.Addr, match func(netip.Addr) bool) (netlink.Addr, bool, error) {
	addrs, err := m.Bridge.Addrs(family(like))
	if err != nil {
		return netlink.Addr{}, false, err
	}
	for _, a := range addrs {
		if match(bridge.AddrPrefix(a).Addr()) {
			return a, true, nil
		}
	}
	return netlink.Addr{}, false, nil
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

// take picks a free candidate and adds it.
func (m *Manager) take(ctx context.Context, subnet netip.Prefix) error {
	cands := Candidates(m.Policy, subnet)
	if len(cands) == 0 {
		return fmt.Errorf("%w for subnet %s on node %q: the bridge %s has none, hostAddress.static[%q] has none in it and hostAddress.pool has no range in it",
			ErrNoAddress, subnet, m.Policy.Node, m.Bridge.Name, m.Policy.Node)
	}
	var tried []string
	for _, c := range cands {
		err := m.tryOne(ctx, subnet, c)
		if err == nil {
			return nil
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

// tryOne probes c, records it as owned, then adds it. Only pool picks are
// probed (~250 ms, under the bridge lock): a node's static address is the
// admin's explicit choice for that node. IPv6 relies on the kernel's own
// DAD, which runs when the address is added.
func (m *Manager) tryOne(ctx context.Context, subnet, c netip.Prefix) error {
	if c.Addr().Is4() && m.Probe != nil && !m.Policy.isStatic(c.Addr()) {
		inUse, err := m.Probe(ctx, m.Bridge.Index, c.Addr())
		if err != nil {
			return fmt.Errorf("probe %s: %w", c.Addr(), err)
		}
		if inUse {
			return errInUse
		}
	}
	if err := store.CreateFile(m.ownedPath(subnet), []byte(c.String()+"\n")); err != nil {
		return err
	}
	err := m.Bridge.AddAddr(c)
	if err == nil && c.Addr().Is6() {
		err = m.waitDAD(ctx, c)
	}
	if err != nil {
		return errors.Join(err, m.Bridge.DelAddr(c), store.RemoveFile(m.ownedPath(subnet)))
	}
	return nil
}

// waitDAD waits until the kernel's duplicate address detection is done.
func (m *Manager) waitDAD(ctx context.Context, p netip.Prefix) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		flags, err := m.addrFlags(p)
		if err != nil {
			return err
		}
		switch {
		case flags&unix.IFA_F_DADFAILED != 0:
			return fmt.Errorf("%s: %w (IPv6 DAD failed)", p.Addr(), errInUse)
		case flags&unix.IFA_F_TENTATIVE == 0:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for DAD on %s: %w", p.Addr(), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (m *Manager) addrFlags(p netip.Prefix) (int, error) {
	a, ok, err := m.findAddr(p.Addr(), isAddr(p.Addr()))
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("address %s vanished from %s during DAD", p, m.Bridge.Name)
	}
	return a.Flags, nil
}

// Release drops key's use of subnet; the last user removes tapbridge's
// address (never the admin's).
func (m *Manager) Release(key string, subnet netip.Prefix) error {
	subnet = subnet.Masked()
	empty, err := m.users(subnet).Remove(key)
	if err != nil || !empty {
		return err
	}
	return m.dropOwned(subnet)
}

func (m *Manager) dropOwned(subnet netip.Prefix) error {
	owned, ok, err := m.owned(subnet)
	if err != nil {
		return err
	}
	if ok && m.Bridge != nil {
		if err := m.Bridge.DelAddr(owned); err != nil {
			return err
		}
	}
	if err := store.RemoveFile(m.ownedPath(subnet)); err != nil {
		return err
	}
	if err := os.Remove(m.subnetDir(subnet)); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
		return fmt.Errorf("remove %s: %w", m.subnetDir(subnet), err)
	}
	return nil
}

// Subnets lists the subnets with state on this bridge (a handful).
func (m *Manager) Subnets() ([]netip.Prefix, error) {
	entries, err := os.ReadDir(filepath.Join(m.Dir, "subnets"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list subnets of %s: %w", m.Dir, err)
	}
	var out []netip.Prefix
	for _, e := range entries {
		if p, err := netip.ParsePrefix(strings.ReplaceAll(e.Name(), "_", "/")); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// ReleaseAll drops key from every subnet it uses (DEL needs no prevResult).
// It also finishes a release that a crash cut short after emptying a
// subnet's users but before removing its address: once key is no longer
// a user, the retried DEL would otherwise leave that address for good.
func (m *Manager) ReleaseAll(key string) error {
	subnets, err := m.Subnets()
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range subnets {
		if m.users(s).Has(key) {
			errs = append(errs, m.Release(key, s))
		} else {
			errs = append(errs, m.dropIfUnused(s))
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) dropIfUnused(subnet netip.Prefix) error {
	empty, err := m.users(subnet).RemoveIfEmpty()
	if err != nil || !empty {
		return err
	}
	return m.dropOwned(subnet)
}

// Verify checks that key is counted on subnet and that the bridge has an
// address there (CHECK).
func (m *Manager) Verify(key string, subnet netip.Prefix) error {
	subnet = subnet.Masked()
	_, ok, err := m.findAddr(subnet.Addr(), subnet.Contains)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("bridge %s has no host address in subnet %s", m.Bridge.Name, subnet)
	}
	if !m.users(subnet).Has(key) {
		return fmt.Errorf("attachment %s is not counted as a user of subnet %s on bridge %s", key, subnet, m.Bridge.Name)
	}
	return nil
}

// Reconcile drops users that are no longer live, removes addresses nobody
// uses and restores owned addresses that live attachments still need (GC,
// e.g. after a reboot wiped the bridge). Cost grows with the node's
// attachments, which is fine for GC and for nothing else.
func (m *Manager) Reconcile(live func(key string) bool) error {
	subnets, err := m.Subnets()
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range subnets {
		errs = append(errs, m.reconcileSubnet(s, live))
	}
	return errors.Join(errs...)
}

func (m *Manager) reconcileSubnet(subnet netip.Prefix, live func(string) bool) error {
	users := m.users(subnet)
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
		return m.dropOwned(subnet)
	}
	owned, ok, err := m.owned(subnet)
	if err != nil || !ok || m.Bridge == nil {
		return err
	}
	return m.ensurePresent(owned)
}
