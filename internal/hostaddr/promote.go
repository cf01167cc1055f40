package hostaddr

import (
	"errors"
	"io/fs"
	"net/netip"

	"github.com/tapbridge/tapbridge-cni/internal/bridge"
	"github.com/tapbridge/tapbridge-cni/internal/failpoint"
	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// promoteSetting is the bridge's switch that makes the kernel keep the
// other IPv4 addresses of a subnet (its secondaries, the admin's among
// them) when the subnet's primary address is deleted; off, it deletes
// them with the primary.
const promoteSetting = "promote_secondaries"

// Failpoints inside the removal of tapbridge's own primary IPv4 address,
// in the order it hits them: with the "failpoints" build tag,
// TAPBRIDGE_FAILPOINT=<name>:exit crashes the call right there.
const (
	StepPromoteSaved    = "promote-saved"
	StepPromoteOn       = "promote-on"
	StepOwnedDeleted    = "owned-deleted"
	StepPromoteRestored = "promote-restored"
)

// RemovalSteps lists the removal's failpoints in order.
func RemovalSteps() []string {
	return []string{StepPromoteSaved, StepPromoteOn, StepOwnedDeleted, StepPromoteRestored}
}

// delOwned removes tapbridge's own address p, and nothing else. IPv6 has
// no primary address: each one goes alone. An IPv4 primary goes with
// promotion on, whether or not secondaries are seen now, since an admin
// (who takes no lock of ours) may add one at any moment.
func (m *Manager) delOwned(p netip.Prefix) error {
	if p.Addr().Is6() {
		return m.Bridge.DelAddr(p)
	}
	a, ok, err := m.findOwned(p)
	switch {
	case err != nil || !ok:
		return err
	case a.Secondary(): // deleting a secondary touches no other address
		return m.Bridge.DelAddr(p)
	}
	pr, err := m.Bridge.Promotion()
	if err != nil {
		return err
	}
	if pr.On() {
		return m.Bridge.DelAddr(p)
	}
	return m.delPrimary(p, pr.Value)
}

// findOwned finds p itself, by address and prefix length (an IPv4
// address may also be there with another length, as someone else's).
func (m *Manager) findOwned(p netip.Prefix) (bridge.Addr, bool, error) {
	addrs, err := m.Bridge.Addrs(family(p.Addr()))
	if err != nil {
		return bridge.Addr{}, false, err
	}
	for _, a := range addrs {
		if a.Prefix == p {
			return a, true, nil
		}
	}
	return bridge.Addr{}, false, nil
}

// delPrimary turns promotion on around the deletion of p and puts old
// back. The old value is saved durably first, so a call after a crash at
// any point puts it back (restoreSaved).
func (m *Manager) delPrimary(p netip.Prefix, old string) error {
	s, err := m.saving(old)
	if err != nil {
		return err
	}
	if err := m.State.SaveSetting(s); err != nil {
		return err
	}
	err = failpoint.Hit(StepPromoteSaved)
	if err == nil {
		err = m.Bridge.SetPromotion(s.Set)
	}
	if err == nil {
		err = failpoint.Hit(StepPromoteOn)
	}
	if err == nil {
		err = m.Bridge.DelAddr(p)
	}
	if err == nil {
		err = failpoint.Hit(StepOwnedDeleted)
	}
	return errors.Join(err, m.restore(s))
}

// saving describes the change about to be made to the bridge's switch.
func (m *Manager) saving(old string) (state.Saved, error) {
	boot, err := bridge.BootID()
	if err != nil {
		return state.Saved{}, err
	}
	_, index := m.Bridge.Device()
	return state.Saved{Setting: promoteSetting, Boot: boot, Index: index, Old: old, Set: "1"}, nil
}

// restore puts a saved value back, then forgets it.
func (m *Manager) restore(s state.Saved) error {
	if err := m.putBack(s); err != nil {
		return err
	}
	if err := failpoint.Hit(StepPromoteRestored); err != nil {
		return err
	}
	return m.State.ForgetSetting(s.Setting)
}

// putBack writes the saved value back unless the bridge is gone or made
// anew (a reboot, or another device with its name), or someone changed
// the value since tapbridge set it: then theirs stands.
func (m *Manager) putBack(s state.Saved) error {
	if m.Bridge == nil {
		return nil
	}
	boot, err := bridge.BootID()
	if err != nil {
		return err
	}
	if _, index := m.Bridge.Device(); s.Boot != boot || s.Index != index {
		return nil
	}
	pr, err := m.Bridge.Promotion()
	if errors.Is(err, fs.ErrNotExist) {
		return nil // the bridge went away since the call looked it up
	}
	if err != nil || pr.Value != s.Set {
		return err
	}
	return m.Bridge.SetPromotion(s.Old)
}

// restoreSaved puts back a setting that a crashed call left changed.
// Every call under the bridge lock runs it before anything else.
func (m *Manager) restoreSaved() error {
	if m.restored {
		return nil
	}
	s, ok, err := m.State.SavedSetting(promoteSetting)
	if err != nil {
		return err
	}
	if ok {
		if err := m.putBack(s); err != nil {
			return err
		}
		if err := m.State.ForgetSetting(s.Setting); err != nil {
			return err
		}
	}
	m.restored = true
	return nil
}
