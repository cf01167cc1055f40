package plugin

import (
	"errors"
	"net"
	"slices"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// CHECK compares the pieces against the IPs of this attachment only: in a
// chain, prevResult holds other plugins' interfaces and IPs too.
func TestOwnLease(t *testing.T) {
	const netns, other = "/run/netns/pod", "/run/netns/other"
	ifs := func(pairs ...string) []*current.Interface {
		var out []*current.Interface
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, &current.Interface{Name: pairs[i], Sandbox: pairs[i+1]})
		}
		return out
	}
	cases := []struct {
		name    string
		ifaces  []*current.Interface
		ips     []*current.IPConfig
		want    []string
		wantErr bool
	}{
		{"alone", ifs("tb0", "", "pod1", netns, "tap1", netns),
			[]*current.IPConfig{ipOn("10.0.0.5/24", 1), ipOn("2001:db8::5/64", 1)}, []string{"10.0.0.5/24", "2001:db8::5/64"}, false},
		{"after another plugin", ifs("up0", netns, "tb0", "", "pod1", netns, "tap1", netns),
			[]*current.IPConfig{ipOn("192.0.2.9/24", 0), ipOn("10.0.0.5/24", 2)}, []string{"10.0.0.5/24"}, false},
		{"an IP without an interface index", ifs("tb0", "", "pod1", netns, "tap1", netns),
			[]*current.IPConfig{ipOn("198.51.100.9/24", -1), ipOn("10.0.0.5/24", 1)}, []string{"10.0.0.5/24"}, false},
		{"an index out of range", ifs("tb0", "", "pod1", netns),
			[]*current.IPConfig{ipOn("198.51.100.9/24", 7), ipOn("10.0.0.5/24", 1)}, []string{"10.0.0.5/24"}, false},
		{"the same name in another netns", ifs("pod1", other, "tb0", "", "pod1", netns),
			[]*current.IPConfig{ipOn("192.0.2.9/24", 0), ipOn("10.0.0.5/24", 2)}, []string{"10.0.0.5/24"}, false},
		{"not ours at all", ifs("pod1", other), []*current.IPConfig{ipOn("192.0.2.9/24", 0)}, nil, true},
	}
	p := &Plugin{Env: Env{IfName: "pod1", Netns: netns}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			prev := &current.Result{Interfaces: c.ifaces, IPs: c.ips}
			lease, err := p.ownLease(prev)
			if c.wantErr {
				if !errors.Is(err, ErrCheck) {
					t.Fatalf("ownLease = %v, want ErrCheck", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ip := range lease.IPs {
				got = append(got, ip.Address.String())
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("IPs %v, want %v", got, c.want)
			}
			if len(prev.IPs) != len(c.ips) {
				t.Errorf("prevResult changed: %d IPs, had %d", len(prev.IPs), len(c.ips))
			}
		})
	}
}

// ipOn is an IP on interface index i; i < 0 gives no index.
func ipOn(cidr string, i int) *current.IPConfig {
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	c := &current.IPConfig{Address: *n}
	if i >= 0 {
		c.Interface = current.Int(i)
	}
	return c
}
