package plugin

import (
	"context"

	"github.com/tapbridge/tapbridge-cni/internal/bridge"
	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// The bridge's shared state (its host addresses) changes only under the
// bridge lock, in one short critical section per call.

// joinBridgeState counts the attachment on its subnets' host addresses,
// adding an address for the first attachment on a subnet.
func (op *addOp) joinBridgeState(ctx context.Context) error {
	unlock, err := op.store.LockBridge(op.bridge.Name, op.Net.LockTimeout)
	if err != nil {
		return err
	}
	defer unlock()
	op.undo.Push("bridge-state", func() error {
		return op.leaveBridgeState(op.store, op.bridge.Name, op.names.Key)
	})
	addrs := op.hostAddrs(op.store, op.bridge.Name, op.bridge)
	for _, subnet := range op.subnets(op.guestIPs()) {
		if err := addrs.Acquire(ctx, op.names.Key, subnet); err != nil {
			return err
		}
	}
	return nil
}

// leaveBridgeState undoes joinBridgeState, from whatever state is on disk:
// it needs neither prevResult nor the config of the ADD. It takes the lock
// itself, as DEL, GC and a failed ADD's undo all call it.
func (p *Plugin) leaveBridgeState(st *state.Store, bridgeName, key string) error {
	unlock, err := st.LockBridge(bridgeName, p.Net.LockTimeout)
	if err != nil {
		return err
	}
	defer unlock()
	b, err := bridge.Lookup(bridgeName)
	if err != nil {
		b = nil // gone or replaced: release the state, nothing to remove from it
	}
	return p.hostAddrs(st, bridgeName, b).ReleaseAll(key)
}
