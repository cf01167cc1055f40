package bridge

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// TestPromotion checks the kernel's rule that package hostaddr works
// around (and that its fake bridge models): an IPv4 address added in the
// subnet of another is its secondary; deleting the primary deletes the
// secondaries with promote_secondaries off, and promotes the first with
// it on. The switch reads and writes the bridge's own value.
func TestPromotion(t *testing.T) {
	harness.RequireRoot(t)
	n, err := harness.NewNetns(harness.RunID("tbpr"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Delete(); err != nil {
			t.Error(err)
		}
	})
	err = n.Do(func() error {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
			return err
		}
		b, err := Lookup("br0")
		if err != nil {
			return err
		}
		for _, on := range []string{"0", "1"} {
			checkPromotion(t, b, on)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := BootID(); err != nil || id == "" {
		t.Fatalf("boot ID %q: %v", id, err)
	}
}

func checkPromotion(t *testing.T, b *Bridge, on string) {
	t.Helper()
	if err := b.SetPromotion(on); err != nil {
		t.Fatal(err)
	}
	if p, err := b.Promotion(); err != nil || p.Value != on || p.All != "0" || p.On() != (on == "1") {
		t.Fatalf("promotion %+v, %v; want %s", p, err, on)
	}
	for _, a := range []string{"192.0.2.1/24", "192.0.2.5/24", "192.0.2.6/24"} {
		if err := b.AddAddr(netip.MustParsePrefix(a), true); err != nil {
			t.Fatal(err)
		}
	}
	if got := secondaries(t, b); got != "192.0.2.1/24:false 192.0.2.5/24:true 192.0.2.6/24:true " {
		t.Fatalf("addresses (secondary?): %s", got)
	}
	if err := b.DelAddr(netip.MustParsePrefix("192.0.2.1/24")); err != nil {
		t.Fatal(err)
	}
	want := ""
	if on == "1" {
		want = "192.0.2.5/24:false 192.0.2.6/24:true "
	}
	if got := secondaries(t, b); got != want {
		t.Fatalf("promote_secondaries %s, after deleting the primary: %q, want %q", on, got, want)
	}
	for _, a := range []string{"192.0.2.6/24", "192.0.2.5/24"} {
		if err := b.DelAddr(netip.MustParsePrefix(a)); err != nil {
			t.Fatal(err)
		}
	}
}

func secondaries(t *testing.T, b *Bridge) string {
	t.Helper()
	addrs, err := b.Addrs(unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	var s string
	for _, a := range addrs {
		s += fmt.Sprintf("%s:%v ", a.Prefix, a.Secondary())
	}
	return s
}
