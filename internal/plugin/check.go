package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/internal/attachment"
	"github.com/tapbridge/tapbridge-cni/internal/link"
	"github.com/tapbridge/tapbridge-cni/internal/redirect"
	"github.com/tapbridge/tapbridge-cni/internal/spoof"
	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// Check verifies every piece against the record and prevResult, repairs
// nothing, and names what is wrong.
func (p *Plugin) Check(ctx context.Context) error {
	prev := p.Net.PrevResult
	if prev == nil || len(prev.Interfaces) == 0 {
		return fmt.Errorf("%w for CHECK (missing or without interfaces)", ErrPrevResult)
	}
	lease, err := p.ownLease(prev)
	if err != nil {
		return err
	}
	op, err := p.prepareCheck(lease)
	if err != nil {
		return err
	}
	defer op.netns.Close()
	checks := []struct {
		name string
		fn   func() error
	}{
		{"bridge port", func() error { return op.bridge.VerifyPort(op.names.HostIf) }},
		{"pod devices", op.checkPod},
		{"host addresses", op.checkHostAddrs},
		{"anti-spoof rules", op.checkSpoof},
	}
	for _, c := range checks {
		if err := c.fn(); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrCheck, c.name, err)
		}
	}
	if p.Net.IPAMType != "" {
		return p.ipam().Check(ctx, op.ipamCall())
	}
	return nil
}

// ownLease is the part of prevResult that this attachment's ADD made and
// acted on: the IPs whose interface index names its pod interface
// (CNI_IFNAME in CNI_NETNS). In a chain, prevResult also holds the IPs of
// other plugins, for which ADD made no host address or anti-spoof rule.
// An IP without an interface index is never ours (ADD sets the index on
// every IP it reports, and CHECK needs 0.4.0 or later, whose results keep
// it), so it is left out as well.
func (p *Plugin) ownLease(prev *current.Result) (*current.Result, error) {
	own := map[int]bool{}
	for i, iface := range prev.Interfaces {
		if iface != nil && iface.Name == p.Env.IfName && iface.Sandbox == p.Env.Netns {
			own[i] = true
		}
	}
	if len(own) == 0 {
		return nil, fmt.Errorf("%w: prevResult has no interface %s in netns %s", ErrCheck, p.Env.IfName, p.Env.Netns)
	}
	lease := *prev
	lease.IPs = nil
	for _, ip := range prev.IPs {
		if ip != nil && ip.Interface != nil && own[*ip.Interface] {
			lease.IPs = append(lease.IPs, ip)
		}
	}
	return &lease, nil
}

// prepareCheck loads what CHECK compares against: the record, the bridge,
// the pod netns, and the guest MAC and IPs from prevResult.
func (p *Plugin) prepareCheck(prev *current.Result) (*attachmentView, error) {
	op := &attachmentView{Plugin: p, names: attachment.For(p.id()), lease: prev}
	var err error
	if op.store, err = state.Open(p.Net.DataDir); err != nil {
		return nil, err
	}
	rec, err := op.store.Get(op.names.Key)
	if errors.Is(err, state.ErrUnreadable) {
		return nil, fmt.Errorf("%w: %w", ErrCheck, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: no record of container %s ifname %s: %w", ErrCheck, p.Env.ContainerID, p.Env.IfName, err)
	}
	if op.guestMAC, err = net.ParseMAC(rec.MAC); err != nil {
		return nil, fmt.Errorf("%w: record of %s: bad mac: %w", ErrCheck, op.names.Key, err)
	}
	if err := op.openBridgeAndPod(rec.Bridge); err != nil {
		return nil, err
	}
	return op, nil
}

func (op *attachmentView) checkPod() error {
	spec := op.tapSpec()
	return op.netns.Do(func(ns.NetNS) error { return verifyPod(op.names.PodIf, op.guestMAC, spec) })
}

// verifyPod runs in the pod netns.
func verifyPod(podIf string, mac net.HardwareAddr, spec link.Tap) error {
	l, err := netlink.LinkByName(podIf)
	if err != nil {
		return fmt.Errorf("pod interface %s: %w", podIf, err)
	}
	if _, ok := l.(*netlink.Veth); !ok {
		return fmt.Errorf("pod interface %s is a %s, not a veth", podIf, l.Type())
	}
	if got := l.Attrs().HardwareAddr.String(); got != mac.String() {
		return fmt.Errorf("pod interface %s has MAC %s, want %s", podIf, got, mac)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("pod interface %s is down", podIf)
	}
	if err := link.VerifyTap(spec); err != nil {
		return err
	}
	return redirect.Verify(podIf, spec.Name)
}

func (op *attachmentView) checkHostAddrs() error {
	addrs := op.hostAddrs(op.store, op.bridge.Name, op.bridge)
	var errs []error
	for _, s := range op.subnets(op.guestIPs()) {
		errs = append(errs, addrs.Verify(op.names.Key, s))
	}
	return errors.Join(errs...)
}

func (op *attachmentView) checkSpoof() error {
	if !op.hasPortTable() {
		return nil
	}
	return spoof.Verify(op.spoofPort())
}
