package claim

import (
	"fmt"
	"net/netip"
	"testing"
)

// status.ips as the controller, OVN-Kubernetes and this IPAM write them
// (with a prefix length), or bare; anything else is skipped.
func TestAddrs(t *testing.T) {
	c := &Claim{IPs: []string{"10.0.0.5/24", "2001:db8::5", "nope", "::ffff:10.0.0.6/120"}}
	if got := fmt.Sprint(c.Addrs()); got != "[10.0.0.5 2001:db8::5 10.0.0.6]" {
		t.Fatalf("Addrs() = %s", got)
	}
	if !c.Names(netip.MustParseAddr("10.0.0.5")) || c.Names(netip.MustParseAddr("10.0.0.7")) {
		t.Fatal("Names")
	}
	if !c.Names(netip.MustParseAddr("10.0.0.6")) {
		t.Fatal("Names does not unmap ::ffff:10.0.0.6/120 as Addrs does")
	}
}
