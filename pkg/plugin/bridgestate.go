package plugin

import (
	"context"
	"errors"
	"net"
	"path/filepath"

	"github.com/tapbridge/tapbridge-cni/pkg/bridge"
	"github.com/tapbridge/tapbridge-cni/pkg/spoof"
	"github.com/tapbridge/tapbridge-cni/pkg/store"
)

// The bridge's shared state (host addresses, the anti-spoof table) changes
// only under the bridge lock, in one short critical section per call.

// joinBridgeState counts the attachment on its subnets' host addresses and
// installs its anti-spoof rules.
func (op *addOp) joinBridgeState(ctx context.Context) error {
	unlock, err := op.store.LockBridge(op.bridge.Name, op.Net.LockTimeout)
	if err != nil {
		return err
	}
	defer unlock()
	op.undo.Push("bridge-state", func() error {
		finish, err := op.leaveBridgeState(op.store, op.bridge.Name, op.names.Key)
		finish()
		return err
	})
	addrs := op.hostAddrs(op.store, op.bridge.Name, op.bridge)
	for _, subnet := range op.subnets(op.guestIPs()) {
		if err := addrs.Acquire(ctx, op.names.Key, subnet); err != nil {
			return err
		}
	}
	if !op.Net.SpoofCheck {
		return nil
	}
	if err := portsSet(op.store, op.bridge.Name).Add(op.names.Key); err != nil {
		return err
	}
	return spoof.Ensure(op.spoofPort())
}

func (op *addOp) spoofPort() spoof.Port {
	var ips []net.IP
	for _, p := range op.guestIPs() {
		ips = append(ips, p.Addr().AsSlice())
	}
	return spoof.Port{Bridge: op.bridge.Name, Name: op.names.HostIf, MAC: op.guestMAC, IPs: ips}
}

// portsSet holds the attachments with anti-spoof rules on a bridge; the
// table goes when the set empties.
func portsSet(st *store.Store, bridgeName string) store.Set {
	return store.Set{Dir: filepath.Join(st.BridgeDir(bridgeName), "ports")}
}

// leaveBridgeState undoes joinBridgeState, from whatever state is on disk:
// it needs neither prevResult nor the config of the ADD. It takes the lock
// itself, as DEL, GC and a failed ADD's undo all call it. The caller runs
// finish when it is done with slow kernel work of its own (see
// spoof.BeginDelete); finish is never nil.
func (p *Plugin) leaveBridgeState(st *store.Store, bridgeName, key string) (finish func(), err error) {
	finish = func() {}
	unlock, err := st.LockBridge(bridgeName, p.Net.LockTimeout)
	if err != nil {
		return finish, err
	}
	defer unlock()
	b, err := bridge.Lookup(bridgeName)
	if err != nil {
		b = nil // gone or replaced: release the state, nothing to remove from it
	}
	errs := []error{p.hostAddrs(st, bridgeName, b).ReleaseAll(key)}
	ports := portsSet(st, bridgeName)
	if ports.Has(key) {
		var err error
		finish, err = dropSpoof(ports, bridgeName, key)
		errs = append(errs, err)
	}
	return finish, errors.Join(errs...)
}

// dropSpoof removes the port's rules, then its entry in the ports set, so a
// crash in between leaves the entry for the next DEL to finish; the last
// port takes the table with it.
func dropSpoof(ports store.Set, bridgeName, key string) (finish func(), err error) {
	finish, err = spoof.BeginDelete(bridgeName, key, false)
	if err != nil {
		return finish, err
	}
	empty, err := ports.Remove(key)
	if err != nil || !empty {
		return finish, err
	}
	return finish, spoof.DeleteTable(bridgeName)
}
