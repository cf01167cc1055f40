package integration

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// upstreamStub is a plugin that runs before tapbridge in a chain and
// reports an interface of its own in the pod with two IPs: one on that
// interface, one without an interface index (as a result may carry). It
// makes no device: tapbridge must neither touch nor check another plugin's.
const upstreamStub = `if [ "$CNI_COMMAND" = ADD ]; then
  printf '{"cniVersion":"1.1.0","interfaces":[{"name":"up0","sandbox":"%s"}],"ips":[{"address":"192.0.2.9/24","interface":0},{"address":"198.51.100.9/24"}]}' "$CNI_NETNS"
fi
exit 0
`

// chainRuntime is libcni with a conflist of the stub, then tapbridge.
func (f *fixture) chainRuntime(conf []byte) *runtime {
	f.t.Helper()
	stub := stubIPAM(f.t, "upstream", upstreamStub)
	var plugin map[string]any
	if err := json.Unmarshal(conf, &plugin); err != nil {
		f.t.Fatal(err)
	}
	list := map[string]any{"cniVersion": plugin["cniVersion"], "name": plugin["name"],
		"plugins": []any{map[string]any{"type": "upstream"}, plugin}}
	b, err := json.Marshal(list)
	if err != nil {
		f.t.Fatal(err)
	}
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		f.t.Fatal(err)
	}
	paths := append([]string{stub}, f.paths(pluginDir)...)
	return &runtime{f: f, cni: libcni.NewCNIConfigWithCacheDir(paths, filepath.Join(f.dir, "cache"), nil), list: l}
}

// A12, CHECK: after a chained ADD, CHECK looks only at this attachment's
// IPs (those on its pod interface), so it passes, and it still finds a
// piece of tapbridge's own that was tampered with.
func TestCheckChained(t *testing.T) {
	tampers := []struct {
		name   string
		tamper func(f *fixture, hostIf string) error
		want   string
	}{
		{"host address deleted", func(f *fixture, _ string) error {
			return f.node.Host.Do(func() error {
				br, err := netlink.LinkByName(harness.BridgeName)
				if err != nil {
					return err
				}
				a, _ := netlink.ParseAddr("10.77.0.250/24")
				return netlink.AddrDel(br, a)
			})
		}, "no host address in subnet 10.77.0.0/24"},
		{"anti-spoof rule deleted", func(f *fixture, hostIf string) error {
			return f.node.Host.Do(func() error { return nftDelete(hostIf, true) })
		}, "rules, want"},
	}
	for _, c := range tampers {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			pod := f.pod()
			before := f.snapshot()
			r := f.chainRuntime(f.conf("1.1.0"))
			rt := rtConf("cid-chain", pod, "eth0")
			res, err := r.add(rt)
			if err != nil {
				t.Fatalf("chained ADD: %v", err)
			}
			if len(res.Interfaces) != 4 || res.Interfaces[0].Name != "up0" || len(res.IPs) != 3 {
				t.Fatalf("chained result: interfaces %v, ips %v", res.Interfaces, res.IPs)
			}
			if err := r.check(rt); err != nil {
				t.Fatalf("CHECK after a chained ADD: %v", err)
			}
			if err := c.tamper(f, res.Interfaces[1].Name); err != nil {
				t.Fatalf("tamper: %v", err)
			}
			if err := r.check(rt); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("CHECK after tampering = %v, want an error naming %q", err, c.want)
			}
			if err := r.del(rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			f.expectClean(before)
		})
	}
}

// CHECK with a prevResult that does not hold this attachment's pod
// interface compares against nothing of its own: it fails, naming it.
func TestCheckForeignPrevResult(t *testing.T) {
	f := newFixture(t)
	pod := f.pod()
	conf := f.conf("1.1.0")
	a := harness.Attachment{CID: "cid-foreign", Pod: pod, IfName: "eth0"}
	add := f.must(f.add(conf, a))
	defer f.del(conf, a)
	prev := `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/elsewhere"}],` +
		`"ips":[{"address":"10.77.0.10/24","interface":0}]}`
	out := f.exec(harness.Call{Command: "CHECK", ContainerID: a.CID, Netns: pod.Path(), IfName: a.IfName,
		Stdin: f.withPrev(conf, []byte(prev))})
	if out.RC == 0 || out.Err.Code != 103 || !strings.Contains(out.Err.Msg, "no interface eth0 in netns "+pod.Path()) {
		t.Fatalf("CHECK with a foreign prevResult: rc %d %s", out.RC, out.Stdout)
	}
	f.must(f.check(conf, add.Stdout, a))
}
