package kube_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/test/harness"
	"github.com/tapbridge/tapbridge-cni/test/kube"
)

// The Multus tests: the runtime (libcni, as containerd uses it) execs
// Multus thin, which reads the pod and the NADs from the API server and
// execs tapbridge-cni for each VM network; tapbridge is reached only
// through Multus.

func needMultus(t *testing.T) {
	t.Helper()
	if err := kube.MultusBinaries(); err != nil {
		t.Fatal(err)
	}
}

const (
	persistentNAD = "vmnet13-persistent" // conf/k8s/nad-tapbridge-ipam.yaml, mode 3
	hostLocalNAD  = "vmnet3"             // conf/k8s/nad-host-local.yaml + conf/cni/node1/vmnet3.conflist, mode 1
)

// TestMultusAddDel: a virt-launcher pod with two VM networks (one per
// mode of IPAM) is ADDed through Multus: each TAP exists, owned by 107;
// the network-status Multus writes back gives KubeVirt, under pod<hash>,
// the guest MAC and IPs; the host addresses are on the bridge. DEL
// through Multus leaves the node and the API as they were.
func TestMultusAddDel(t *testing.T) {
	needMultus(t)
	n := newMultusNode(t, "node1")
	createNAD(t, "nad-tapbridge-ipam.yaml", persistentNAD, sandboxed)
	createNAD(t, "nad-host-local.yaml", hostLocalNAD, nil)
	n.installNodeConf(t, "node1/vmnet3.conflist")

	nets := []struct{ vmNet, nad, mac, subnet string }{
		{"flat13", persistentNAD, "02:00:00:13:00:01", "172.16.13.0/24"},
		{"flat3", hostLocalNAD, "02:00:00:03:00:01", "172.16.3.0/24"},
	}
	var elems []element
	for _, nw := range nets {
		elems = append(elems, element{Name: nw.nad, Interface: podIface(nw.vmNet), MAC: nw.mac})
	}
	pod := virtLauncher(t, "virt-launcher-vm1-abcde", elems...)
	s := n.sandbox(t, pod)
	before := n.read(t, s.ns)

	s.mustAdd(t)
	statuses := networkStatus(t, pod)
	for _, nw := range nets {
		podIf := podIface(nw.vmNet)
		st, ok := kubevirtLookup(statuses, podIf)
		if !ok {
			t.Fatalf("network-status has no entry for %s (KubeVirt's lookup of %s)", podIf, nw.vmNet)
		}
		if !strings.HasSuffix(st.Name, nw.nad) || st.MAC != nw.mac || len(st.IPs) != 1 {
			t.Fatalf("entry of %s: %+v, want network %s, MAC %s and one IP", podIf, st, nw.nad, nw.mac)
		}
		if ip := netip.MustParseAddr(st.IPs[0]); !netip.MustParsePrefix(nw.subnet).Contains(ip) {
			t.Fatalf("guest IP %s outside %s", ip, nw.subnet)
		}
		if tap, ok := kubevirtLookup(statuses, tapOf(podIf)); ok && len(tap.IPs) != 0 {
			t.Fatalf("TAP entry carries the guest IPs: %+v", tap)
		}
		expectTap(t, s.ns, tapOf(podIf))
	}
	expectHostAddrs(t, n, "172.16.13.0/24", "172.16.3.150/24")
	if len(allocations(t, &network{name: persistentNAD})) != 1 {
		t.Fatalf("want one IPAllocation of %s after ADD", persistentNAD)
	}

	s.mustDel(t)
	if d := before.Diff(n.read(t, s.ns)); d != "" {
		t.Fatalf("the node differs after DEL through Multus:\n%s", d)
	}
	if a := allocations(t, &network{name: persistentNAD}); len(a) != 0 {
		t.Fatalf("IPAllocations left after DEL: %v", a)
	}
}

// expectTap checks the TAP in the pod netns: a TAP, owner and group 107.
func expectTap(t *testing.T, pod harness.Netns, name string) {
	t.Helper()
	err := pod.Do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		tp, ok := l.(*netlink.Tuntap)
		if !ok || tp.Mode != netlink.TUNTAP_MODE_TAP || tp.Owner != 107 || tp.Group != 107 {
			t.Errorf("%s: %T %+v, want a TAP owned by 107:107", name, l, l)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("TAP %s in the pod: %v", name, err)
	}
}

// expectHostAddrs checks that the bridge has an address in each subnet
// (or that very address, for a host prefix with bits set).
func expectHostAddrs(t *testing.T, n *mnode, want ...string) {
	t.Helper()
	var have []netip.Prefix
	if err := n.hn.Host.Do(func() (err error) { have, err = harness.BridgeAddrs(harness.BridgeName); return err }); err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		p := netip.MustParsePrefix(w)
		if !slices.ContainsFunc(have, func(h netip.Prefix) bool { return h == p || p.Masked() == p && p.Contains(h.Addr()) && h.Bits() == p.Bits() }) {
			t.Fatalf("bridge addresses %v: none is %s", have, w)
		}
	}
}
