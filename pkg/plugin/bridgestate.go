package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
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
		return op.leaveBridgeState(op.store, op.bridge.Name, op.names.Key, false)
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
	if err := markTable(op.store, op.bridge.Name); err != nil {
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

// tableMarker exists from before the bridge's anti-spoof table is created
// until after it is deleted, so a DEL killed between emptying the ports
// set and deleting the table leaves a marker for the next DEL to act on.
func tableMarker(st *store.Store, bridgeName string) string {
	return filepath.Join(st.BridgeDir(bridgeName), "spoof-table")
}

func markTable(st *store.Store, bridgeName string) error {
	f, err := os.OpenFile(tableMarker(st, bridgeName), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("mark anti-spoof table of %s: %w", bridgeName, err)
	}
	return f.Close()
}

// leaveBridgeState undoes joinBridgeState, from whatever state is on disk:
// it needs neither prevResult nor the config of the ADD. It takes the lock
// itself, as DEL, GC and a failed ADD's undo all call it. rulesGone says
// the caller already removed the port's anti-spoof rules (see tearDown).
func (p *Plugin) leaveBridgeState(st *store.Store, bridgeName, key string, rulesGone bool) error {
	unlock, err := st.LockBridge(bridgeName, p.Net.LockTimeout)
	if err != nil {
		return err
	}
	defer unlock()
	b, err := bridge.Lookup(bridgeName)
	if err != nil {
		b = nil // gone or replaced: release the state, nothing to remove from it
	}
	return errors.Join(
		p.hostAddrs(st, bridgeName, b).ReleaseAll(key),
		dropSpoof(st, bridgeName, key, rulesGone),
	)
}

// dropSpoof removes the port's rules, then its entry in the ports set, so a
// crash in between leaves the entry for the next DEL to finish; the last
// port takes the table with it (see tableMarker).
func dropSpoof(st *store.Store, bridgeName, key string, rulesGone bool) error {
	ports := portsSet(st, bridgeName)
	if ports.Has(key) {
		if !rulesGone {
			if err := spoof.Delete(bridgeName, key); err != nil {
				return err
			}
		}
		if _, err := ports.Remove(key); err != nil {
			return err
		}
	}
	marker := tableMarker(st, bridgeName)
	if _, err := os.Stat(marker); err != nil {
		return nil // no table, or already gone
	}
	if empty, err := ports.RemoveIfEmpty(); err != nil || !empty {
		return err
	}
	if err := spoof.DeleteTable(bridgeName); err != nil {
		return err
	}
	return store.RemoveFile(marker)
}

// beginSpoofRemoval deletes the port's anti-spoof rules without the bridge
// lock (they are the port's alone) and returns finish, which waits for the
// kernel to free them; see tearDown. finish is never nil.
func beginSpoofRemoval(st *store.Store, bridgeName, key string) (finish func(), err error) {
	if !portsSet(st, bridgeName).Has(key) {
		return func() {}, nil
	}
	return spoof.BeginDelete(bridgeName, key)
}
