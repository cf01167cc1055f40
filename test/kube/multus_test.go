package kube_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/test/harness"
	"github.com/tapbridge/tapbridge-cni/test/kube"
)

// The Multus tests: the runtime (libcni, as containerd uses it) execs
// Multus, thin (which reads the pod and the NADs from the API server and
// execs tapbridge-cni for each VM network) or thick (multus-shim, which
// hands the call to the node's multus-daemon, which does the same);
// tapbridge is reached only through Multus. Each test runs in both modes
// (eachMode); hot-plug, a thick-only path, is in multus_hotplug_test.go.

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
func TestMultusAddDel(t *testing.T) { eachMode(t, testMultusAddDel) }

func testMultusAddDel(t *testing.T, mode multusMode) {
	needMultus(t)
	n := newMultusNode(t, mode, "node1")
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
	before, allocsBefore := n.read(t, s.ns), allocCounts(t)

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
	expectAllocs(t, "after ADD", withAllocs(allocsBefore, persistentNAD, 1))

	s.mustDel(t)
	if d := before.Diff(n.read(t, s.ns)); d != "" {
		t.Fatalf("the node differs after DEL through Multus:\n%s", d)
	}
	expectAllocs(t, "after DEL", allocsBefore)
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
		if !slices.ContainsFunc(have, func(h netip.Prefix) bool {
			return h == p || p.Masked() == p && p.Contains(h.Addr()) && h.Bits() == p.Bits()
		}) {
			t.Fatalf("bridge addresses %v: none is %s", have, w)
		}
	}
}

// guestIP is the IP KubeVirt reads for the VM network on podIf.
func guestIP(t *testing.T, s *sandbox, podIf string) string {
	t.Helper()
	st, ok := kubevirtLookup(networkStatus(t, s.pod), podIf)
	if !ok || len(st.IPs) != 1 {
		t.Fatalf("network-status of %s: entry of %s %+v (found %v), want one IP", s.pod.Name, podIf, st, ok)
	}
	return st.IPs[0]
}

// TestMultusClaims: with tapbridge-ipam and an ipam-claim-reference in
// the element (as the kubevirt-ipam-controller writes it), a re-created
// virt-launcher pod and a migration target on another node get the
// claim's address, through Multus; their DELs leave both nodes clean and
// the address with the claim.
func TestMultusClaims(t *testing.T) { eachMode(t, testMultusClaims) }

func testMultusClaims(t *testing.T, mode multusMode) {
	needMultus(t)
	a, b := newMultusNode(t, mode, "node-a"), newMultusNode(t, mode, "node-b")
	createNAD(t, "nad-tapbridge-ipam.yaml", persistentNAD, sandboxed)
	podIf := podIface("flat")
	makeClaim(t, "vm2.flat", persistentNAD, podIf)
	t.Cleanup(func() { deleteClaim(t, "vm2.flat") })
	elem := element{Name: persistentNAD, Interface: podIf, MAC: "02:00:00:13:00:02", Claim: "vm2.flat"}

	first := a.sandbox(t, virtLauncher(t, "virt-launcher-vm2-aaaaa", elem))
	baseA := a.read(t, first.ns)
	first.mustAdd(t)
	ip := guestIP(t, first, podIf)
	first.mustDel(t)
	deletePod(t, first.pod)

	again := a.sandbox(t, virtLauncher(t, "virt-launcher-vm2-bbbbb", elem))
	again.mustAdd(t)
	if got := guestIP(t, again, podIf); got != ip {
		t.Fatalf("re-created pod got %s, the claim holds %s", got, ip)
	}
	target := b.sandbox(t, virtLauncher(t, "virt-launcher-vm2-ccccc", elem))
	baseB := b.read(t, target.ns)
	target.mustAdd(t)
	if got := guestIP(t, target, podIf); got != ip {
		t.Fatalf("migration target got %s while the source has %s", got, ip)
	}
	if ips := claimIPs(t, "vm2.flat"); len(ips) != 1 || !strings.HasPrefix(ips[0], ip+"/") {
		t.Fatalf("claim status.ips %v, want %s", ips, ip)
	}
	target.mustDel(t)
	again.mustDel(t)
	for _, c := range []struct {
		n    *mnode
		base harness.State
		s    *sandbox
	}{{a, baseA, again}, {b, baseB, target}} {
		now := c.n.read(t, c.s.ns)
		if d := c.base.Without(first.ns.Name, c.s.ns.Name).Diff(now.Without(c.s.ns.Name)); d != "" {
			t.Fatalf("%s differs after the DELs:\n%s", c.n.name, d)
		}
		if !now.Pods[c.s.ns.Name].OnlyLoopback() {
			t.Fatalf("pod %s keeps links after DEL: %v", c.s.pod.Name, now.Pods[c.s.ns.Name].Names())
		}
	}
	t.Logf("vm2: first pod, re-created pod and migration target all got %s through Multus", ip)
}

// TestMultusErrors: a NAD with a bad config, a NAD naming a missing
// bridge, and an element naming a network that does not exist, each
// after a good network in the same pod: Multus' error names the cause
// (tapbridge's own message for the first two), and the node and the API
// are as they were (IPAllocations of every network counted), before the
// runtime's DEL and after it, and that DEL succeeds (in thick mode as the
// daemon answered it: the shim hides DEL errors): tapbridge's DEL checks
// only the fields it uses, so a NAD that ADD refused does not leave the
// pod Terminating behind a DEL that fails for good.
func TestMultusErrors(t *testing.T) { eachMode(t, testMultusErrors) }

func testMultusErrors(t *testing.T, mode multusMode) {
	needMultus(t)
	n := newMultusNode(t, mode, "node1")
	createNAD(t, "nad-tapbridge-ipam.yaml", persistentNAD, sandboxed)
	good := element{Name: persistentNAD, Interface: podIface("good"), MAC: "02:00:00:13:00:03"}
	cases := []struct {
		name, want string
		nad        func(plugin map[string]any)
	}{
		{"bad-config", "hostAddress.pool", func(p map[string]any) {
			sandboxed(p)
			p["hostAddress"] = map[string]any{"pool": []any{"172.16.13.240/33"}}
		}},
		{"missing-bridge", "br-missing", func(p map[string]any) {
			sandboxed(p)
			p["bridge"] = "br-missing"
		}},
		{"no-such-network", "no-such-network", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.nad != nil {
				createNADNamed(t, c.name, c.nad)
			}
			bad := element{Name: c.name, Interface: podIface(c.name), MAC: "02:00:00:13:00:04"}
			s := n.sandbox(t, virtLauncher(t, "virt-launcher-"+c.name, good, bad))
			before, allocs := n.read(t, s.ns), allocCounts(t)
			_, err := s.add()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ADD through Multus = %v, want an error naming %q", err, c.want)
			}
			t.Logf("Multus: %v", err)
			check := func(when string) {
				if d := before.Diff(n.read(t, s.ns)); d != "" {
					t.Fatalf("the node differs %s:\n%s", when, d)
				}
				expectAllocs(t, when, allocs)
			}
			check("after the failed ADD")
			if err := s.del(); err != nil {
				t.Fatalf("DEL through Multus: %v", err)
			}
			check("after the runtime's DEL")
		})
	}
}

// createNADNamed is the mode-3 NAD of conf/k8s under another name (the
// config's "name" too), adjusted by adjust.
func createNADNamed(t *testing.T, name string, adjust func(plugin map[string]any)) {
	t.Helper()
	createNAD(t, "nad-tapbridge-ipam.yaml", persistentNAD, adjust, name)
}

// TestMultusDelError: a DEL that fails (the node lost tapbridge-cni's
// binary) is an error the test sees, in thick mode too, where
// multus-shim answers success and only the log has the daemon's error;
// the DEL repeated once the binary is back succeeds and leaves the node
// and the API as they were. It shows the DEL checks of these tests can
// fail.
func TestMultusDelError(t *testing.T) { eachMode(t, testMultusDelError) }

func testMultusDelError(t *testing.T, mode multusMode) {
	needMultus(t)
	n := newMultusNode(t, mode, "node1")
	createNAD(t, "nad-tapbridge-ipam.yaml", persistentNAD, sandboxed)
	elem := element{Name: persistentNAD, Interface: podIface("flat13"), MAC: "02:00:00:13:00:05"}
	s := n.sandbox(t, virtLauncher(t, "virt-launcher-vm9-delerr", elem))
	before, allocs := n.read(t, s.ns), allocCounts(t)
	s.mustAdd(t)

	plugin := filepath.Join(n.bin, "tapbridge-cni")
	if err := os.Remove(plugin); err != nil {
		t.Fatal(err)
	}
	err := s.del()
	t.Logf("DEL without the plugin: %v", err)
	if err == nil || !strings.Contains(err.Error(), "tapbridge-cni") {
		t.Fatalf("DEL through Multus without tapbridge-cni = %v, want an error naming it", err)
	}
	if err := os.Symlink(cniBin, plugin); err != nil {
		t.Fatal(err)
	}
	s.mustDel(t)
	if d := before.Diff(n.read(t, s.ns)); d != "" {
		t.Fatalf("the node differs after the repeated DEL:\n%s", d)
	}
	expectAllocs(t, "after the repeated DEL", allocs)
}
