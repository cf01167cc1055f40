package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// A8: CHECK finds each kind of tampering, names it, and repairs nothing.
func TestCheckAfterTampering(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(f *fixture, pod harness.Netns, hostIf, tapName, ip string) error
		want   string // in the CHECK error message
	}{
		{"tap deleted", func(f *fixture, pod harness.Netns, _, tapName, _ string) error {
			return pod.Do(func() error { return delLink(tapName) })
		}, "tap"},
		{"tc filter deleted", func(f *fixture, pod harness.Netns, _, tapName, _ string) error {
			return pod.Do(func() error { return delFilters(tapName) })
		}, "redirect"},
		{"host veth detached", func(f *fixture, _ harness.Netns, hostIf, _, _ string) error {
			return f.node.Host.Do(func() error {
				return netlink.LinkSetNoMaster(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: hostIf}})
			})
		}, "not a port of bridge"},
		{"host address deleted", func(f *fixture, _ harness.Netns, _, _, _ string) error {
			return f.node.Host.Do(func() error {
				br, _ := netlink.LinkByName(harness.BridgeName)
				a, _ := netlink.ParseAddr("10.77.0.250/24")
				return netlink.AddrDel(br, a)
			})
		}, "no host address in subnet 10.77.0.0/24"},
		{"IPAM file deleted", func(f *fixture, _ harness.Netns, _, _, ip string) error {
			return os.Remove(filepath.Join(f.ipamDir(), "vmnet", ip))
		}, "host-local"},
		{"anti-spoof table deleted", func(f *fixture, _ harness.Netns, hostIf, _, _ string) error {
			return f.node.Host.Do(func() error { return nftDelete(hostIf, false) })
		}, "table netdev tapbridge-"},
		{"anti-spoof rule deleted", func(f *fixture, _ harness.Netns, hostIf, _, _ string) error {
			return f.node.Host.Do(func() error { return nftDelete(hostIf, true) })
		}, "rules, want"},
		{"tap down", func(f *fixture, pod harness.Netns, _, tapName, _ string) error {
			return pod.Do(func() error {
				return netlink.LinkSetDown(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: tapName}})
			})
		}, "is down"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			pod := f.pod()
			before := f.snapshot()
			r := f.runtime(f.conf("1.1.0"))
			rt := rtConf("cid-a8", pod, "eth0")
			res, err := r.add(rt)
			if err != nil {
				t.Fatal(err)
			}
			ip := res.IPs[0].Address.IP.String()
			if err := c.tamper(f, pod, res.Interfaces[0].Name, res.Interfaces[1].Name, ip); err != nil {
				t.Fatalf("tamper: %v", err)
			}
			tampered := f.snapshot()
			err = r.check(rt)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("CHECK = %v, want an error naming %q", err, c.want)
			}
			if d := tampered.Diff(f.snapshot()); d != "" {
				t.Errorf("CHECK repaired or changed something:\n%s", d)
			}
			if err := r.del(rt); err != nil {
				t.Fatalf("DEL after tampering: %v", err)
			}
			f.expectClean(before)
		})
	}
}

func delLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkDel(l)
}

// nftDelete removes a port's anti-spoof table, or only its last rule, as
// an operator with nft would.
func nftDelete(hostIf string, lastRule bool) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: "tapbridge-" + hostIf, Family: nftables.TableFamilyNetdev}
	if !lastRule {
		c.DelTable(t)
		return c.Flush()
	}
	rules, err := c.GetRules(t, &nftables.Chain{Name: "guest", Table: t})
	if err != nil || len(rules) == 0 {
		return fmt.Errorf("rules of %s: %d, %v", t.Name, len(rules), err)
	}
	if err := c.DelRule(rules[len(rules)-1]); err != nil {
		return err
	}
	return c.Flush()
}

func delFilters(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	filters, err := netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return err
	}
	for _, fl := range filters {
		if err := netlink.FilterDel(fl); err != nil {
			return err
		}
	}
	return nil
}

// A9: CHECK without prevResult is refused, by name.
func TestCheckWithoutPrevResult(t *testing.T) {
	f := newFixture(t)
	pod := f.pod()
	r := f.runtime(f.conf("1.1.0"))
	rt := rtConf("cid-a9", pod, "eth0")
	if _, err := r.add(rt); err != nil {
		t.Fatal(err)
	}
	defer r.del(rt)
	for name, stdin := range map[string][]byte{
		"missing": f.conf("1.1.0"),
		"empty":   f.conf("1.1.0", func(c map[string]any) { c["prevResult"] = map[string]any{} }),
	} {
		out := f.exec(harness.Call{Command: "CHECK", ContainerID: "cid-a9", Netns: pod.Path(), IfName: "eth0", Stdin: stdin})
		if out.RC == 0 || !strings.Contains(out.Err.Msg, "prevResult") {
			t.Errorf("%s prevResult: rc %d %s", name, out.RC, out.Stdout)
		}
	}
}
