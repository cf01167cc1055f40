package attachment

import (
	"net"
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	n := For(ID{ContainerID: "abc", IfName: "pod1a2b3c4d5e6"})
	if n.Tap != "tap1a2b3c4d5e6" {
		t.Errorf("KubeVirt's pod<hash> must give tap<hash>, got %s", n.Tap)
	}
	if len(n.HostIf) != 15 || !strings.HasPrefix(n.HostIf, "tb") || n.Key != n.HostIf {
		t.Errorf("host veth %q", n.HostIf)
	}
	other := For(ID{ContainerID: "abc", IfName: "eth0"})
	if len(other.Tap) != 15 || !strings.HasPrefix(other.Tap, "tap") {
		t.Errorf("tap name for eth0: %q", other.Tap)
	}
	if For(ID{ContainerID: "abc", IfName: "pod"}).Tap == "tap" {
		t.Error("a bare \"pod\" ifname must not give a bare \"tap\"")
	}
	if n.Group == 0 || other.Group == n.Group {
		t.Errorf("groups %d %d", n.Group, other.Group)
	}
	if n.HostMAC[0] != 0xfe {
		t.Errorf("host MAC %s must start with fe", n.HostMAC)
	}
}

// Container IDs that share long prefixes (cilium#5619) and the
// ("ab","c")/("a","bc") split must not collide.
func TestNoCollisions(t *testing.T) {
	seen := map[string]ID{}
	prefix := strings.Repeat("f", 60)
	for i := 0; i < 5000; i++ {
		for _, id := range []ID{
			{ContainerID: prefix + string(rune('a'+i%26)) + strings.Repeat("0", i/26), IfName: "eth0"},
			{ContainerID: "ab", IfName: "c" + strings.Repeat("x", i%8)},
			{ContainerID: "a", IfName: "bc" + strings.Repeat("x", i%8)},
		} {
			n := For(id)
			if prev, ok := seen[n.HostIf]; ok && prev != id {
				t.Fatalf("%v and %v both give %s", prev, id, n.HostIf)
			}
			seen[n.HostIf] = id
		}
	}
}

func TestMACs(t *testing.T) {
	id := ID{ContainerID: "abc", IfName: "eth0"}
	m := GuestMAC(id)
	if m.String() != GuestMAC(id).String() {
		t.Error("guest MAC is not stable")
	}
	if m[0]&1 != 0 || m[0]&2 == 0 {
		t.Errorf("guest MAC %s must be unicast and locally administered", m)
	}
	tap := TapMAC(m)
	if tap[0] != 0xfe || tap[1:].String() != m[1:].String() {
		t.Errorf("tap MAC %s from %s", tap, m)
	}
	fe := net.HardwareAddr{0xfe, 1, 2, 3, 4, 5}
	if got := TapMAC(fe); got[0] != 0xfa || got.String() == fe.String() {
		t.Errorf("tap MAC %s for guest %s must differ (libvirt uses 0xfa)", got, fe)
	}
}

// What DEL and GC recognise as the plugin's: the host end's derived MAC
// when the attachment is known, the MAC's form when only the key is, and
// salvaged fields only when they hash to the key.
func TestRecognise(t *testing.T) {
	id := ID{ContainerID: "abc", IfName: "eth0"}
	n := For(id)
	other := For(ID{ContainerID: "abd", IfName: "eth0"})
	if !n.IsHostMAC(n.HostMAC) || n.IsHostMAC(other.HostMAC) {
		t.Errorf("IsHostMAC must accept exactly %s", n.HostMAC)
	}
	k := FromKey(n.Key)
	if k.HostIf != n.HostIf || k.Group != 0 || k.Tap != "" {
		t.Errorf("FromKey(%s) = %+v: only the host end is known", n.Key, k)
	}
	if !k.IsHostMAC(other.HostMAC) || k.IsHostMAC(net.HardwareAddr{0x02, 1, 2, 3, 4, 5}) {
		t.Error("from the key alone, any MAC of a host end's form (fe:…) and no other is accepted")
	}
	if !IsKeyOf(n.Key, id) || IsKeyOf(n.Key, ID{ContainerID: "abc", IfName: "eth1"}) || IsKeyOf(For(ID{}).Key, ID{}) {
		t.Error("IsKeyOf must hold for the attachment's own, non-empty ID only")
	}
}
