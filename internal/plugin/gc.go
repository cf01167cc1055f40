package plugin

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tapbridge/tapbridge-cni/internal/attachment"
	"github.com/tapbridge/tapbridge-cni/internal/bridge"
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
	stale, err := p.staleRecords(st)
	errs := []error{err}
	for _, rec := range stale {
		if err := p.collect(ctx, st, rec); err != nil {
			errs = append(errs, fmt.Errorf("tear down %s/%s: %w", rec.ContainerID, rec.IfName, err))
		}
	}
	errs = append(errs, p.reconcile(st))
	if p.Net.IPAMType != "" {
		errs = append(errs, p.ipam().GC(ctx))
	}
	return errors.Join(errs...)
}

// collect tears down one stale attachment under its record's lock; a
// record that went meanwhile (a DEL got there first) leaves nothing to do.
func (p *Plugin) collect(ctx context.Context, st *state.Store, rec state.Record) error {
	lock, err := st.LockRecord(rec.Key, p.Net.LockTimeout)
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer lock.Unlock()
	t := teardown{id: attachment.ID{ContainerID: rec.ContainerID, IfName: rec.IfName}, netns: rec.Netns, bridge: rec.Bridge}
	return p.tearDown(ctx, st, t, lock)
}

// staleRecords lists this network's records that are not valid.
func (p *Plugin) staleRecords(st *state.Store) ([]state.Record, error) {
	keys, err := st.Keys()
	if err != nil {
		return nil, err
	}
	var stale []state.Record
	var errs []error
	for _, key := range keys {
		rec, err := st.Get(key)
		if errors.Is(err, state.ErrNotFound) {
			continue // a DEL removed it since Keys: nothing left to collect
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		valid := p.Net.GC.Valid[types.GCAttachment{ContainerID: rec.ContainerID, IfName: rec.IfName}]
		if rec.Network == p.Net.Name && !valid {
			stale = append(stale, rec)
		}
	}
	return stale, errors.Join(errs...)
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
