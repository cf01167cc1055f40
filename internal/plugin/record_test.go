package plugin

import (
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/tapbridge/tapbridge-cni/internal/attachment"
	"github.com/tapbridge/tapbridge-cni/internal/config"
	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// The record carries the names from the start and IPAM's result, in the
// state package's own types, once ADD is done.
func TestRecordFromLease(t *testing.T) {
	mac, _ := net.ParseMAC("0a:58:ac:10:0d:0a")
	_, dst, _ := net.ParseCIDR("10.96.0.0/12")
	table := 100
	op := &addOp{attachmentView: attachmentView{
		Plugin: &Plugin{
			Net: &config.Net{Name: "vmnet", Bridge: "br-ext", Pod: config.Pod{Namespace: "vms", Name: "vm1"}},
			Env: Env{ContainerID: "c1", IfName: "pod1", Netns: "/run/netns/p"},
		},
		names: attachment.For(attachment.ID{ContainerID: "c1", IfName: "pod1"}), guestMAC: mac, mtu: 1450,
		lease: &current.Result{
			IPs: []*current.IPConfig{
				{Address: net.IPNet{IP: net.ParseIP("172.16.13.10"), Mask: net.CIDRMask(24, 32)}, Gateway: net.ParseIP("172.16.13.1")},
				{Address: net.IPNet{IP: net.ParseIP("2001:db8::10"), Mask: net.CIDRMask(64, 128)}},
			},
			Routes: []*types.Route{{Dst: *dst, GW: net.ParseIP("172.16.13.254"), Table: &table}},
			DNS:    types.DNS{Nameservers: []string{"172.16.13.53", "not-an-ip"}, Domain: "d", Search: []string{"s"}, Options: []string{"o"}},
		},
	}}
	claim := op.record(state.PhaseAdding)
	if claim.IPs != nil || claim.Routes != nil || !reflect.DeepEqual(claim.DNS, state.DNS{}) {
		t.Fatalf("the claim carries addresses: %+v", claim)
	}
	want := state.Record{
		Phase: state.PhaseReady, ContainerID: "c1", IfName: "pod1", Network: "vmnet", Bridge: "br-ext",
		Netns: "/run/netns/p", HostIf: op.names.HostIf, Tap: op.names.Tap, MAC: "0a:58:ac:10:0d:0a", MTU: 1450,
		Pod: state.Pod{Namespace: "vms", Name: "vm1"},
		IPs: []state.IP{
			{Address: netip.MustParsePrefix("172.16.13.10/24"), Gateway: netip.MustParseAddr("172.16.13.1")},
			{Address: netip.MustParsePrefix("2001:db8::10/64")},
		},
		Routes: []state.Route{{Dst: netip.MustParsePrefix("10.96.0.0/12"), GW: netip.MustParseAddr("172.16.13.254"), Table: &table}},
		DNS:    state.DNS{Nameservers: []netip.Addr{netip.MustParseAddr("172.16.13.53")}, Domain: "d", Search: []string{"s"}, Options: []string{"o"}},
	}
	if got := op.record(state.PhaseReady); !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
}
