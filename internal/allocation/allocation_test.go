package allocation

import (
	"net/netip"
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	for _, c := range []struct{ network, addr, name string }{
		{"vmnet13", "172.16.13.10", "vmnet13.172-16-13-10"},
		{"v6net", "2001:db8::10", "v6net.2001-db8--10"},
	} {
		a := netip.MustParseAddr(c.addr)
		if got := Name(c.network, a); got != c.name {
			t.Errorf("Name(%s, %s) = %s, want %s", c.network, a, got, c.name)
		}
		if back, ok := AddrOfName(c.network, c.name); !ok || back != a {
			t.Errorf("AddrOfName(%s) = %v %v", c.name, back, ok)
		}
	}
	// A name that is no DNS label is digested: two such networks differ.
	k1, k2 := Key("Net_A"), Key("Net-A")
	if k1 == k2 || !strings.HasPrefix(k1, "net-") || len(k1) > 63 || k2 != "net-"+k2[4:] {
		t.Errorf("keys %q %q", k1, k2)
	}
	if Key("vmnet13") != "vmnet13" {
		t.Error("a DNS label is not kept as is")
	}
}

func TestUsers(t *testing.T) {
	a := &Allocation{Spec: Spec{Network: "n"}}
	u1, u2 := User{ContainerID: "c1", IfName: "eth0", Node: "a"}, User{ContainerID: "c2", IfName: "eth0", Node: "b"}
	b := a.AddUser(u1).AddUser(u2).AddUser(u1)
	if len(b.Spec.Users) != 2 || len(a.Spec.Users) != 0 {
		t.Fatalf("users %v (original %v)", b.Spec.Users, a.Spec.Users)
	}
	if c := b.RemoveUser(u1); len(c.Spec.Users) != 1 || c.Spec.Users[0] != u2 || len(b.Spec.Users) != 2 {
		t.Fatalf("after remove: %v", c.Spec.Users)
	}
	if l := b.labels(); len(l) != 3 || l[NetworkLabel] != "n" {
		t.Fatalf("labels %v", l)
	}
}
