package plugin

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tapbridge/tapbridge-cni/internal/attachment"
	"github.com/tapbridge/tapbridge-cni/internal/bridge"
	"github.com/tapbridge/tapbridge-cni/internal/link"
	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// GC tears down every recorded attachment of this network that the
// runtime no longer lists, releasing its IPAM lease itself (host-local has
// no GC of its own), then recomputes host addresses and forwards GC to
// IPAM. Without a valid-attachments key it tears nothing down: a missing
// list is never read as "everything is stale". It keeps going past
// failures and reports them all.
func (p *Plugin) GC(ctx context.Context) error {
	if p.Net.GC == nil {
		p.Log.InfoContext(ctx, "GC without cni.dev/valid-attachments: nothing torn down")
		return nil
	}
	st, err := state.Open(p.Net.DataDir)
	if err != nil {
		return err
	}
	stale, err := p.staleRecords(ctx, st)
	errs := []error{err}
	for _, t := range stale {
		if err := p.collect(ctx, st, t); err != nil {
			errs = append(errs, fmt.Errorf("tear down %s: %w", describe(t), err))
		}
	}
	errs = append(errs, p.reconcile(st))
	if p.Net.IPAMType != "" {
		errs = append(errs, p.ipam().GC(ctx))
	}
	return errors.Join(errs...)
}

// describe names a teardown in an error: by its attachment when known.
func describe(t teardown) string {
	if t.id == (attachment.ID{}) {
		return t.names.Key
	}
	return t.id.ContainerID + "/" + t.id.IfName
}

// collect tears down one stale attachment under its record's lock; a
// record that went meanwhile (a DEL got there first) leaves nothing to do.
func (p *Plugin) collect(ctx context.Context, st *state.Store, t teardown) error {
	lock, err := st.LockRecord(t.names.Key, p.Net.LockTimeout)
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer lock.Unlock()
	// The lease as the record says it now, under its lock: a DEL and a
	// new ADD of the attachment may have come since staleRecords read it.
	if rec, err := st.Get(t.names.Key); err == nil {
		t.leased = p.leasedOf(rec)
	}
	if err := p.tearDown(ctx, st, t, lock); err != nil {
		return err
	}
	if t.id == (attachment.ID{}) {
		p.Log.WarnContext(ctx, "unreadable record torn down by its key alone: its containerID, ifname and netns are unknown, so its IPAM lease is left to IPAM's GC, and its TAP to the pod netns' removal",
			"record", t.names.Key)
	}
	return nil
}

// staleRecords lists the teardowns of this network's records that are
// not valid.
func (p *Plugin) staleRecords(ctx context.Context, st *state.Store) ([]teardown, error) {
	keys, err := st.Keys()
	if err != nil {
		return nil, err
	}
	validKeys := p.validKeys()
	var stale []teardown
	var errs []error
	for _, key := range keys {
		rec, err := st.Get(key)
		switch {
		case errors.Is(err, state.ErrNotFound):
			continue // a DEL removed it since Keys: nothing left to collect
		case errors.Is(err, state.ErrUnreadable):
			if t, ok := p.staleUnreadable(ctx, key, err, validKeys); ok {
				stale = append(stale, t)
			}
		case err != nil:
			errs = append(errs, err)
		case rec.Network == p.Net.Name && !p.Net.GC.Valid[types.GCAttachment{ContainerID: rec.ContainerID, IfName: rec.IfName}]:
			id := attachment.ID{ContainerID: rec.ContainerID, IfName: rec.IfName}
			stale = append(stale, teardown{names: attachment.For(id), id: id, netns: rec.Netns, bridge: p.bridgeOf(rec)})
		}
	}
	return stale, errors.Join(errs...)
}

// validKeys are the record keys of the valid attachments: an unreadable
// record names its attachment by its key only.
func (p *Plugin) validKeys() map[string]bool {
	keys := make(map[string]bool, len(p.Net.GC.Valid))
	for a := range p.Net.GC.Valid {
		keys[attachment.For(attachment.ID{ContainerID: a.ContainerID, IfName: a.IfName}).Key] = true
	}
	return keys
}

// staleUnreadable decides about a record GC cannot read. One whose key is
// a valid attachment's is left alone, and so is another network's (that
// network's GC collects it). Any other is stale: torn down as far as what
// can be trusted of it goes (the key alone gives the host end; salvaged
// fields that hash to the key give the rest).
func (p *Plugin) staleUnreadable(ctx context.Context, key string, err error, validKeys map[string]bool) (teardown, bool) {
	if validKeys[key] {
		p.Log.WarnContext(ctx, "unreadable record of a valid attachment left alone", "err", err)
		return teardown{}, false
	}
	rec, trusted := salvaged(err)
	if other := p.otherNetwork(key, rec, trusted); other != "" {
		p.Log.WarnContext(ctx, "unreadable record of another network left alone", "network", other, "err", err)
		return teardown{}, false
	}
	t := teardown{names: attachment.FromKey(key), bridge: p.Net.Bridge}
	if trusted {
		t.id = attachment.ID{ContainerID: rec.ContainerID, IfName: rec.IfName}
		t.names, t.netns, t.bridge = attachment.For(t.id), rec.Netns, p.bridgeOf(rec)
	}
	p.Log.WarnContext(ctx, "tearing down a stale attachment without its record", "err", err)
	return t, true
}

// otherNetwork names the other network (or its bridge) an unreadable
// record belongs to: the network it still names, or, when it names none,
// the bridge other than this network's that its host end is a port of.
// "" when it is this network's, or when that cannot be told.
func (p *Plugin) otherNetwork(key string, rec state.Record, trusted bool) string {
	if trusted && rec.Network != "" {
		if rec.Network == p.Net.Name {
			return ""
		}
		return rec.Network
	}
	master, err := link.MasterOf(attachment.FromKey(key).HostIf)
	if err != nil || master == "" || master == p.Net.Bridge { // "": gone (a reboot), or no port
		return ""
	}
	return "on bridge " + master
}

// reconcile makes the bridge's host addresses match the live records.
func (p *Plugin) reconcile(st *state.Store) error {
	unlock, err := st.LockBridge(p.Net.Bridge, p.Net.LockTimeout)
	if err != nil {
		return err
	}
	defer unlock()
	b, err := bridge.Lookup(p.Net.Bridge)
	if err != nil {
		b = nil
	}
	live := func(key string) bool {
		_, err := st.Get(key)
		return !errors.Is(err, state.ErrNotFound)
	}
	return p.hostAddrs(st, p.Net.Bridge, b).Reconcile(live)
}
