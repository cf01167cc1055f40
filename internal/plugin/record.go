package plugin

import (
	"context"
	"net"
	"net/netip"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// The attachment's record is written twice: a claim before anything else
// (its exclusive create is what makes a second ADD fail), and the complete
// record, made durable beside the claim as soon as the lease is known
// (its fsync overlaps the anti-spoof and bridge steps) and put in place by
// ADD's last step, which is when a reader may serve it.

// record is what the state directory says of the attachment: the names
// always, the IPAM result once ADD is done.
func (op *addOp) record(phase state.Phase) state.Record {
	r := state.Record{
		Phase: phase, ContainerID: op.Env.ContainerID, IfName: op.Env.IfName, Network: op.Net.Name,
		Bridge: op.Net.Bridge, Netns: op.Env.Netns, HostIf: op.names.HostIf,
		Tap: op.names.Tap, MAC: op.guestMAC.String(), MTU: op.mtu,
		Pod:            state.Pod{Namespace: op.Net.Pod.Namespace, Name: op.Net.Pod.Name},
		LearnLinkLocal: op.Net.LearnLinkLocal,
	}
	if op.Net.DHCP != nil {
		r.DHCP = &state.DHCP{LeaseTime: int(op.Net.DHCP.LeaseTime.Seconds())}
	}
	if phase == state.PhaseReady && op.lease != nil {
		r.IPs, r.Routes, r.DNS = leaseIPs(op.lease), leaseRoutes(op.lease), leaseDNS(op.lease)
	}
	return r
}

// stageRecord starts writing the complete record; the record's undo
// (Delete) removes it, once the write is over.
func (op *addOp) stageRecord(context.Context) error {
	rec := op.record(state.PhaseReady)
	op.staged = newPendingWrite(func() error { return op.store.Stage(op.names.Key, rec) })
	op.undo.Push("stage", op.staged.wait)
	return nil
}

// publishRecord replaces the claim with the complete record, atomically.
func (op *addOp) publishRecord(context.Context) error {
	if err := op.staged.wait(); err != nil {
		return err
	}
	return op.store.Commit(op.names.Key)
}

// pendingWrite is a write running in the background; wait returns its
// error, as often as it is asked.
type pendingWrite struct {
	done chan struct{}
	err  error
}

func newPendingWrite(write func() error) *pendingWrite {
	w := &pendingWrite{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.err = write()
	}()
	return w
}

func (w *pendingWrite) wait() error {
	<-w.done
	return w.err
}

func leaseIPs(res *current.Result) []state.IP {
	var out []state.IP
	for _, ip := range res.IPs {
		p, ok := toPrefix(ip.Address)
		if !ok {
			continue
		}
		out = append(out, state.IP{Address: p, Gateway: toAddr(ip.Gateway)})
	}
	return out
}

func leaseRoutes(res *current.Result) []state.Route {
	var out []state.Route
	for _, r := range res.Routes {
		if r == nil {
			continue
		}
		dst, ok := toPrefix(r.Dst)
		if !ok {
			continue
		}
		out = append(out, state.Route{Dst: dst, GW: toAddr(r.GW), MTU: r.MTU, AdvMSS: r.AdvMSS,
			Priority: r.Priority, Table: r.Table, Scope: r.Scope})
	}
	return out
}

// leaseDNS keeps the nameservers that are addresses: a reader can serve
// no other kind.
func leaseDNS(res *current.Result) state.DNS {
	d := state.DNS{Domain: res.DNS.Domain, Search: res.DNS.Search, Options: res.DNS.Options}
	for _, s := range res.DNS.Nameservers {
		if a, err := netip.ParseAddr(s); err == nil {
			d.Nameservers = append(d.Nameservers, a)
		}
	}
	return d
}

// toAddr converts an optional IP; nil gives the zero Addr.
func toAddr(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}
