package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/tapbridge/tapbridge-cni/internal/attachment"
	"github.com/tapbridge/tapbridge-cni/internal/ipam"
	"github.com/tapbridge/tapbridge-cni/internal/link"
	"github.com/tapbridge/tapbridge-cni/internal/spoof"
	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// teardown is what DEL and GC both remove: ADD backwards, every step
// tolerant of what is already gone, and of links of the attachment's
// names that tapbridge did not make (left alone).
type teardown struct {
	names  attachment.Names
	id     attachment.ID // zero when unknown (a GC of an unreadable record): no IPAM DEL
	netns  string
	bridge string
	args   string
	leased []netip.Addr // IPAM's addresses, from a complete record; nil when unknown
}

// leasedOf is what a record says this network's IPAM gave the
// attachment: known only from a complete record (an ADD that stopped
// early may have got an address it never wrote down) of this network
// (another's lease is in another IPAM) that names some; nil for unknown.
func (p *Plugin) leasedOf(rec state.Record) []netip.Addr {
	if rec.Phase != state.PhaseReady || rec.Network != p.Net.Name || len(rec.IPs) == 0 {
		return nil
	}
	out := make([]netip.Addr, 0, len(rec.IPs))
	for _, ip := range rec.IPs {
		out = append(out, ip.Address.Addr())
	}
	return out
}

// Del removes the attachment. It succeeds when things are already gone,
// when the netns is gone or unset, when called twice, and when the record
// is unreadable: the call names the attachment and the config its bridge.
func (p *Plugin) Del(ctx context.Context) error {
	st, err := state.Open(p.Net.DataDir)
	if err != nil {
		return err
	}
	t := teardown{names: attachment.For(p.id()), id: p.id(), netns: p.Env.Netns, bridge: p.Net.Bridge, args: p.Env.Args}
	lock, err := st.LockRecord(t.names.Key, p.Net.LockTimeout)
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return err
	}
	defer lock.Unlock()
	rec, err := st.Get(t.names.Key)
	switch {
	case err == nil:
		t.bridge, t.leased = p.bridgeOf(rec), p.leasedOf(rec)
		if t.netns == "" {
			t.netns = rec.Netns // CNI_NETNS may be unset; the TAP is still in there
		}
	case errors.Is(err, state.ErrUnreadable):
		p.Log.WarnContext(ctx, "tearing down without the record", "err", err)
		if s, ok := salvaged(err); ok && t.netns == "" {
			t.netns = s.Netns
		}
	case !errors.Is(err, state.ErrNotFound):
		return err
	}
	return p.tearDown(ctx, st, t, lock)
}

// bridgeOf is the bridge a record names, or this network's for one that
// names none.
func (p *Plugin) bridgeOf(rec state.Record) string {
	if rec.Bridge == "" {
		return p.Net.Bridge
	}
	return rec.Bridge
}

// salvaged is what a damaged record still says of its attachment, trusted
// only when its containerID and ifname hash to the record's key.
func salvaged(err error) (state.Record, bool) {
	e, ok := errors.AsType[*state.UnreadableError](err)
	if !ok {
		return state.Record{}, false
	}
	r := e.Salvaged
	return r, attachment.IsKeyOf(e.Key, attachment.ID{ContainerID: r.ContainerID, IfName: r.IfName})
}

// tearDown runs with the record's lock held (nil when there is no record),
// which an IPAM plugin that a killed call left running holds too, and is
// so waited for. The record goes last, so a failure keeps it for the
// retry.
func (p *Plugin) tearDown(ctx context.Context, st *state.Store, t teardown, lock *state.RecordLock) error {
	if err := p.removeAttachment(ctx, st, t, lock); err != nil {
		return err
	}
	return st.Delete(t.names.Key)
}

// removeAttachment is ADD backwards, up to its record.
func (p *Plugin) removeAttachment(ctx context.Context, st *state.Store, t teardown, lock *state.RecordLock) error {
	// The port's anti-spoof rules go first, so that the kernel's cleanup of
	// them (a grace period paid when their socket closes) overlaps the
	// links' removal (another one) instead of following it. By DEL the VM
	// is stopped, so the port has nothing left to send. The table goes
	// whether or not this ADD's config had spoofCheck on: an absent table
	// costs one small request.
	//
	// IPAM DEL runs after the links: alongside, its busy CPU delays their
	// grace period; first, it would free the IP while the old TAP exists.
	finish, err := spoof.BeginDelete(t.names.HostIf)
	err = errors.Join(err, p.removeLinks(ctx, t.netns, t.names))
	finish()
	if err != nil {
		return err
	}
	if p.Net.IPAMType != "" && t.id != (attachment.ID{}) {
		call := ipam.Call{ContainerID: t.id.ContainerID, IfName: t.id.IfName, Netns: t.netns, Args: t.args, Hold: lock.File(),
			Known: ipam.Known{Leased: t.leased}}
		if err := p.ipam().Del(ctx, call); err != nil {
			return err // keep the record: the runtime retries DEL
		}
	}
	return p.leaveBridgeState(st, t.bridge, t.names.Key)
}

// removeLinks deletes the pod end and the TAP as one link group (one
// kernel batch; the host end goes with its peer), then makes sure the host
// end is gone, which covers a netns that vanished with its devices. A
// link of the attachment's names that tapbridge did not make (a failed
// ADD's 101, then the runtime's DEL) stays: a group is never a foreign
// link's (0 is refused), and the host end must have its derived MAC.
func (p *Plugin) removeLinks(ctx context.Context, netnsPath string, names attachment.Names) error {
	if netnsPath != "" && names.Group != 0 {
		err := withNetns(netnsPath, func() error { return link.DeleteGroup(names.Group) })
		if err != nil && !netnsGone(err) {
			return fmt.Errorf("remove pod devices of %s: %w", names.Key, err)
		}
	}
	err := link.DeleteVeth(names.HostIf, names.IsHostMAC)
	if errors.Is(err, link.ErrForeign) {
		p.Log.WarnContext(ctx, "link left alone", "err", err)
		return nil
	}
	return err
}
