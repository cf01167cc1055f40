package kube_test

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	tbattach "github.com/tapbridge/tapbridge-cni/internal/attachment"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// TestMultusHotplug: KubeVirt's interface hot-plug and unplug on a running
// virt-launcher pod, through Multus thick's /delegate endpoint with the
// requests multus-dynamic-networks-controller sends (reconcileDynamic):
// the pod was ADDed through the shim with one VM network; the hot-plug
// adds a second interface on the same NAD (its TAP owned by 107, its own
// address, network-status entry under pod<hash> with the guest MAC); the
// unplug, with the pod netns still there, leaves the pod, the node and
// the API exactly as before the hot-plug, and no tapbridge link of that
// interface in the pod. The hot-plug's DEL of the TAP's network-status
// entry (tap<hash>, which matches no element) succeeds and leaves the
// pod's own network whole. The pod's own network is untouched throughout,
// and the runtime's DEL then leaves the node as it was. IPAllocations are
// counted over every network.
func TestMultusHotplug(t *testing.T) {
	needMultus(t)
	n := newMultusNode(t, thick, "node1")
	createNAD(t, "nad-tapbridge-ipam.yaml", persistentNAD, sandboxed)
	first := element{Name: persistentNAD, Interface: podIface("flat13"), MAC: "02:00:00:13:00:21"}
	hot := element{Name: persistentNAD, Interface: podIface("hot13"), MAC: "02:00:00:13:00:22"}
	s := n.sandbox(t, virtLauncher(t, "virt-launcher-vm3-abcde", first))
	before, allocs := n.read(t, s.ns), allocCounts(t)

	s.mustAdd(t)
	firstIP := guestIP(t, s, first.Interface)
	running := n.read(t, s.ns)

	setNetworks(t, s, first, hot)
	calls, err := s.reconcileDynamic(t)
	t.Logf("hot-plug: the controller's requests: %+v", calls)
	if err != nil {
		t.Fatalf("hot-plug: %v", err)
	}
	if !slices.Contains(calls, dynamicCall{"ADD", podNamespace + "/" + persistentNAD, hot.Interface, ""}) {
		t.Fatalf("hot-plug sent %+v, no ADD of %s that succeeded", calls, hot.Interface)
	}
	if !slices.Contains(calls, dynamicCall{"DEL", podNamespace + "/" + persistentNAD, tapOf(first.Interface), ""}) {
		t.Fatalf("hot-plug sent %+v, no DEL of %s (the TAP's network-status entry) that succeeded", calls, tapOf(first.Interface))
	}
	expectTap(t, s.ns, tapOf(hot.Interface))
	statuses := networkStatus(t, s.pod)
	st, ok := kubevirtLookup(statuses, hot.Interface)
	if !ok || st.MAC != hot.MAC || len(st.IPs) != 1 || st.IPs[0] == firstIP ||
		!netip.MustParsePrefix("172.16.13.0/24").Contains(netip.MustParseAddr(st.IPs[0])) {
		t.Fatalf("network-status entry of the hot-plugged %s: %+v (found %v), want MAC %s and a new IP in 172.16.13.0/24",
			hot.Interface, st, ok, hot.MAC)
	}
	if got := guestIP(t, s, first.Interface); got != firstIP {
		t.Fatalf("the pod's first network went from %s to %s", firstIP, got)
	}
	expectTap(t, s.ns, tapOf(first.Interface))
	expectAllocs(t, "after the hot-plug", withAllocs(allocs, persistentNAD, 2))

	setNetworks(t, s, first)
	calls, err = s.reconcileDynamic(t)
	t.Logf("unplug: the controller's requests: %+v", calls)
	if err != nil {
		t.Fatalf("unplug: %v", err)
	}
	if !slices.Contains(calls, dynamicCall{"DEL", podNamespace + "/" + persistentNAD, hot.Interface, ""}) {
		t.Fatalf("unplug sent %+v, no DEL of %s that succeeded", calls, hot.Interface)
	}
	if d := running.Diff(n.read(t, s.ns)); d != "" {
		t.Fatalf("after the unplug the node differs from before the hot-plug:\n%s", d)
	}
	expectNoLinks(t, s.ns, hot.Interface, tapOf(hot.Interface))
	if _, ok := kubevirtLookup(networkStatus(t, s.pod), hot.Interface); ok {
		t.Fatalf("network-status still lists the unplugged %s", hot.Interface)
	}
	if got := guestIP(t, s, first.Interface); got != firstIP {
		t.Fatalf("the pod's first network went from %s to %s", firstIP, got)
	}
	expectAllocs(t, "after the unplug", withAllocs(allocs, persistentNAD, 1))

	s.mustDel(t)
	if d := before.Diff(n.read(t, s.ns)); d != "" {
		t.Fatalf("the node differs after the runtime's DEL:\n%s", d)
	}
	expectAllocs(t, "after the runtime's DEL", allocs)
}

// expectNoLinks checks that none of the names is a link in the pod netns.
func expectNoLinks(t *testing.T, pod harness.Netns, names ...string) {
	t.Helper()
	err := pod.Do(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if slices.Contains(names, l.Attrs().Name) {
				t.Errorf("%s is still in the pod", l.Attrs().Name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMultusHotplugErrors: a hot-plug of a NAD naming a missing bridge
// fails with tapbridge's cause in the daemon's answer, the controller's
// rollback DEL of that interface succeeds, and the pod, the node and the
// API (IPAllocations of every network) are as before the hot-plug, the
// pod's own network untouched.
func TestMultusHotplugErrors(t *testing.T) {
	needMultus(t)
	n := newMultusNode(t, thick, "node1")
	createNAD(t, "nad-tapbridge-ipam.yaml", persistentNAD, sandboxed)
	createNADNamed(t, "missing-bridge", func(p map[string]any) {
		sandboxed(p)
		p["bridge"] = "br-missing"
	})
	first := element{Name: persistentNAD, Interface: podIface("flat13"), MAC: "02:00:00:13:00:31"}
	bad := element{Name: "missing-bridge", Interface: podIface("bad"), MAC: "02:00:00:13:00:32"}
	s := n.sandbox(t, virtLauncher(t, "virt-launcher-vm4-abcde", first))
	s.mustAdd(t)
	firstIP := guestIP(t, s, first.Interface)
	running, allocs := n.read(t, s.ns), allocCounts(t)

	setNetworks(t, s, first, bad)
	calls, err := s.reconcileDynamic(t)
	t.Logf("hot-plug: the controller's requests: %+v; error: %v", calls, err)
	if err == nil || !strings.Contains(err.Error(), "br-missing") {
		t.Fatalf("hot-plug of %s = %v, want an error naming br-missing", bad.Name, err)
	}
	badNet := podNamespace + "/" + bad.Name
	if len(calls) != 2 || calls[0].Cmd != "ADD" || calls[0].IfName != bad.Interface || !strings.Contains(calls[0].Err, "br-missing") ||
		calls[1] != (dynamicCall{"DEL", badNet, bad.Interface, ""}) {
		t.Fatalf("hot-plug sent %+v, want the failed ADD of %s and its rollback DEL, answered with success", calls, bad.Interface)
	}
	if d := running.Diff(n.read(t, s.ns)); d != "" {
		t.Fatalf("after the failed hot-plug the node differs:\n%s", d)
	}
	expectNoLinks(t, s.ns, bad.Interface, tapOf(bad.Interface))
	if got := guestIP(t, s, first.Interface); got != firstIP {
		t.Fatalf("the pod's first network went from %s to %s", firstIP, got)
	}
	expectAllocs(t, "after the failed hot-plug", allocs)
	s.mustDel(t)
}

// TestMultusHotplugPodDelete: a VM stopped with a hot-plugged interface
// still in place, not unplugged first: kubelet's runtime DELs
// the pod (through the shim) and removes its netns. Multus' DEL runs only
// the delegates it cached at the pod's ADD (/var/lib/cni/multus/<container
// ID>, saveDelegates in CmdAdd); the daemon's /delegate ADD never adds to
// that cache, so tapbridge's DEL never comes for the hot-plugged interface:
// its record, the bridge's host address it holds, its port's nft table and
// its IPAllocation stay (its links go with the netns). The test pins that
// leftover exactly (nothing of the pod's own network stays), then shows
// what clears it: the controller's DEL request for the interface, sent
// after the netns is gone, leaves node and API as they were.
func TestMultusHotplugPodDelete(t *testing.T) {
	needMultus(t)
	n := newMultusNode(t, thick, "node1")
	createNAD(t, "nad-tapbridge-ipam.yaml", persistentNAD, sandboxed)
	first := element{Name: persistentNAD, Interface: podIface("flat13"), MAC: "02:00:00:13:00:41"}
	hot := element{Name: persistentNAD, Interface: podIface("hot13"), MAC: "02:00:00:13:00:42"}
	s := n.sandbox(t, virtLauncher(t, "virt-launcher-vm5-abcde", first))
	before, allocs := n.read(t), allocCounts(t)
	s.mustAdd(t)
	setNetworks(t, s, first, hot)
	// Should the test stop before the late unplug, this DEL frees the
	// hot-plugged interface's IPAllocation in the tier's shared API (the
	// daemon is stopped, and the NAD and pod deleted, after it).
	unplugged := false
	t.Cleanup(func() {
		if unplugged {
			return
		}
		hot := element{Name: hot.Name, Namespace: podNamespace, Interface: hot.Interface} // as the unplug sends it
		conf, err := nadConfig(t, hot)
		if err == nil {
			_, err = s.delegate("DEL", s.pod, hot, conf)
		}
		if err != nil {
			t.Errorf("cleanup DEL of the hot-plugged %s: %v", hot.Interface, err)
		}
	})
	if _, err := s.reconcileDynamic(t); err != nil {
		t.Fatalf("hot-plug: %v", err)
	}

	s.mustDel(t)
	if err := s.ns.Delete(); err != nil {
		t.Fatal(err)
	}
	left := before.Diff(n.read(t))
	t.Logf("left after the pod's DEL:\n%s", left)
	hotKey := tbattach.For(tbattach.ID{ContainerID: s.rt.ContainerID, IfName: hot.Interface}).Key
	firstKey := tbattach.For(tbattach.ID{ContainerID: s.rt.ContainerID, IfName: first.Interface}).Key
	for _, want := range []string{"attachments/" + hotKey + ".json", "users/" + hotKey, "netdev tapbridge-" + hotKey, "172.16.13."} {
		if !strings.Contains(left, want) {
			t.Errorf("leftover lacks %q: Multus' DEL of the pod now reaches the hot-plugged interface? Update this test and docs/kubernetes.md", want)
		}
	}
	if strings.Contains(left, firstKey) {
		t.Errorf("more than the hot-plugged interface's state is left (%s is the pod's own)", firstKey)
	}
	if got, want := allocCounts(t), withAllocs(allocs, persistentNAD, 1); !maps.Equal(got, want) {
		t.Errorf("IPAllocations by network after the pod's DEL: %v, want %v (the hot-plugged interface's)", got, want)
	}

	setNetworks(t, s, first)
	calls, err := s.reconcileDynamic(t)
	t.Logf("unplug after the netns is gone: %+v", calls)
	if err != nil {
		t.Fatalf("unplug after the netns is gone: %v", err)
	}
	if !slices.Contains(calls, dynamicCall{"DEL", podNamespace + "/" + persistentNAD, hot.Interface, ""}) {
		t.Fatalf("late unplug sent %+v, no DEL of %s that succeeded", calls, hot.Interface)
	}
	unplugged = true
	if d := before.Diff(n.read(t)); d != "" {
		t.Fatalf("the node differs after the late unplug:\n%s", d)
	}
	expectAllocs(t, "after the late unplug", allocs)
}
