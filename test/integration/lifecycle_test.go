package integration

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

var versions = []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// A1: ADD -> CHECK -> DEL -> DEL through libcni, for every version.
func TestLifecycle(t *testing.T) {
	for _, ver := range versions {
		t.Run(ver, func(t *testing.T) {
			f := newFixture(t)
			pod := f.pod()
			before := f.snapshot()
			r := f.runtime(f.conf(ver))
			rt := rtConf("cid-a1-"+strings.ReplaceAll(ver, ".", ""), pod, "pod1a2b3c4d5e6")
			res, err := r.add(rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			checkResult(t, res, pod)
			f.expectPodDevices(pod, "pod1a2b3c4d5e6", "tap1a2b3c4d5e6", res.Interfaces[2].Mac)
			f.expectBridgeAddr("10.77.0.250/24", true)
			if ver != "0.3.1" {
				if err := r.check(rt); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			if err := r.del(rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			f.expectClean(before)
			if err := r.del(rt); err != nil {
				t.Fatalf("second DEL: %v", err)
			}
			f.expectClean(before)
		})
	}
}

// checkResult: host veth without sandbox, then the TAP and last the pod end
// in the sandbox (Multus before v4.1 reports only the last), IPs on the pod end.
func checkResult(t *testing.T, res *current.Result, pod harness.Netns) {
	t.Helper()
	if len(res.Interfaces) != 3 {
		t.Fatalf("want 3 interfaces, got %v", res.Interfaces)
	}
	host, tapIf, podIf := res.Interfaces[0], res.Interfaces[1], res.Interfaces[2]
	if !strings.HasPrefix(host.Name, "tb") || len(host.Name) != 15 || host.Sandbox != "" {
		t.Errorf("host interface: %+v", host)
	}
	if podIf.Sandbox != pod.Path() || tapIf.Sandbox != pod.Path() {
		t.Errorf("sandbox paths: %+v %+v", podIf, tapIf)
	}
	libvirt := strings.HasPrefix(tapIf.Mac, "fe:") || strings.HasPrefix(podIf.Mac, "fe:") && strings.HasPrefix(tapIf.Mac, "fa:")
	if !libvirt || tapIf.Mac[2:] != podIf.Mac[2:] || tapIf.Mac == podIf.Mac {
		t.Errorf("tap MAC %s is not the guest MAC %s with first byte fe (fa for a guest's fe)", tapIf.Mac, podIf.Mac)
	}
	if len(res.IPs) != 1 || res.IPs[0].Interface == nil || *res.IPs[0].Interface != 2 {
		t.Errorf("IPs must point at the pod interface (index 2): %v", res.IPs)
	}
}

// expectPodDevices checks the TAP (persistent, owner/group 107, vnet_hdr,
// no multi-queue, up, IPv6 off), the pod end and both redirects.
func (f *fixture) expectPodDevices(pod harness.Netns, podIf, tapName, mac string) {
	f.t.Helper()
	err := pod.Do(func() error {
		l, err := netlink.LinkByName(tapName)
		if err != nil {
			return err
		}
		tp, ok := l.(*netlink.Tuntap)
		if !ok {
			return fmt.Errorf("%s is a %s", tapName, l.Type())
		}
		if tp.NonPersist || tp.Owner != 107 || tp.Group != 107 || tp.Flags&netlink.TUNTAP_VNET_HDR == 0 ||
			tp.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 || tp.Attrs().Flags&unix.IFF_UP == 0 {
			return fmt.Errorf("tap %s: %+v flags %v", tapName, tp, tp.Flags)
		}
		pl, err := netlink.LinkByName(podIf)
		if err != nil {
			return err
		}
		if pl.Attrs().HardwareAddr.String() != mac {
			return fmt.Errorf("pod end MAC %s, want %s", pl.Attrs().HardwareAddr, mac)
		}
		for _, dev := range []netlink.Link{l, pl} {
			filters, err := netlink.FilterList(dev, netlink.HANDLE_MIN_INGRESS)
			if err != nil || len(filters) != 1 {
				return fmt.Errorf("%s: want one ingress filter, got %v (%v)", dev.Attrs().Name, filters, err)
			}
			addrs, _ := netlink.AddrList(dev, unix.AF_UNSPEC)
			if len(addrs) != 0 {
				return fmt.Errorf("%s has addresses %v: the pod stack must stay out of the VM's L2", dev.Attrs().Name, addrs)
			}
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) bridgeAddrs() []string {
	f.t.Helper()
	var addrs []netip.Prefix
	err := f.node.Host.Do(func() (err error) {
		addrs, err = harness.BridgeAddrs(harness.BridgeName)
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}

func (f *fixture) expectBridgeAddr(addr string, present bool) {
	f.t.Helper()
	got := f.bridgeAddrs()
	has := false
	for _, a := range got {
		has = has || a == addr
	}
	if has != present {
		f.t.Fatalf("bridge address %s present=%v, want %v (addresses: %v)", addr, has, present, got)
	}
}

// A11: VERSION echoes and lists what we claim.
func TestVersion(t *testing.T) {
	f := newFixture(t)
	out := f.exec(harness.Call{Command: "VERSION", Stdin: []byte(`{"cniVersion":"1.1.0"}`)})
	info, err := (&version.PluginDecoder{}).Decode(out.Stdout)
	if out.RC != 0 || err != nil {
		t.Fatalf("VERSION rc %d: %v %s", out.RC, err, out.Stdout)
	}
	if got := strings.Join(info.SupportedVersions(), ","); got != strings.Join(versions, ",") {
		t.Errorf("supportedVersions = %s, want %s", got, strings.Join(versions, ","))
	}
}

var _ = types.ErrInternal
