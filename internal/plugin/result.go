package plugin

import (
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/tapbridge/tapbridge-cni/internal/attachment"
)

// result lists the host veth (no sandbox), the TAP, and last the pod end
// of the veth (CNI_IFNAME, which carries the guest MAC, as KubeVirt copies
// it into the domain). IPs belong to the guest and point at the pod end.
// The pod end is the last sandbox interface because Multus before v4.1
// (network-attachment-definition-client CreateNetworkStatus) reports only
// the last one in network-status, and KubeVirt looks the VM's network up
// there by pod interface name (pod<hash>); Multus v4.1+ lists both, and
// KubeVirt's lookup by name does not depend on their order. A prevResult
// from an earlier plugin in the chain is kept, and ours appended.
func (op *addOp) result() *current.Result {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if prev := op.Net.PrevResult; prev != nil {
		res.Interfaces, res.IPs, res.Routes, res.DNS = prev.Interfaces, prev.IPs, prev.Routes, prev.DNS
	}
	base := len(res.Interfaces)
	sandbox := op.Env.Netns
	res.Interfaces = append(res.Interfaces,
		&current.Interface{Name: op.names.HostIf, Mac: op.names.HostMAC.String(), Mtu: op.mtu},
		&current.Interface{Name: op.names.Tap, Mac: attachment.TapMAC(op.guestMAC).String(), Mtu: op.mtu, Sandbox: sandbox},
		&current.Interface{Name: op.names.PodIf, Mac: op.guestMAC.String(), Mtu: op.mtu, Sandbox: sandbox},
	)
	if op.lease == nil {
		return res
	}
	podIndex := base + 2
	for _, ip := range op.lease.IPs {
		ip.Interface = current.Int(podIndex)
		res.IPs = append(res.IPs, ip)
	}
	res.Routes = append(res.Routes, op.lease.Routes...)
	if len(op.lease.DNS.Nameservers) > 0 || op.lease.DNS.Domain != "" {
		res.DNS = op.lease.DNS
	}
	return res
}
