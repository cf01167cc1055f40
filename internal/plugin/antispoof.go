package plugin

import (
	"context"
	"net/netip"

	"github.com/tapbridge/tapbridge-cni/internal/spoof"
)

// The anti-spoof rules are the port's own (see package spoof): no lock,
// and nothing of another attachment's is read or written.

// installSpoof puts the port's anti-spoof rules in place: they need the
// guest's IPs, so they come after IPAM. A port gets a table when its
// source is checked or its guest is served by the node agent (whose
// requests the table keeps off the L2).
func (op *addOp) installSpoof(context.Context) error {
	if !op.hasPortTable() {
		return nil
	}
	op.undo.Push("spoof", func() error { return spoof.Delete(op.names.HostIf) })
	return spoof.Ensure(op.spoofPort())
}

func (op *attachmentView) spoofPort() spoof.Port {
	var ips []netip.Addr
	for _, p := range op.guestIPs() {
		ips = append(ips, p.Addr())
	}
	served := op.Net.DHCP != nil
	return spoof.Port{Name: op.names.HostIf, MAC: op.guestMAC, IPs: ips, Intercept: served, Open: !op.Net.SpoofCheck,
		LearnLinkLocal: op.Net.LearnLinkLocal}
}

func (op *attachmentView) hasPortTable() bool { return op.Net.SpoofCheck || op.Net.DHCP != nil }
