package integration

import (
	"encoding/json"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// A12: chained after another plugin, ADD keeps the earlier interfaces and
// IPs and appends its own, with indexes that still point right.
func TestAddChained(t *testing.T) {
	f := newFixture(t)
	pod := f.pod()
	before := f.snapshot()
	prev := map[string]any{
		"cniVersion": "1.1.0",
		"interfaces": []any{map[string]any{"name": "foreign0", "sandbox": pod.Path()}},
		"ips":        []any{map[string]any{"address": "192.0.2.9/24", "interface": 0}},
	}
	conf := f.conf("1.1.0", func(c map[string]any) { c["prevResult"] = prev })
	out := f.exec(harness.Call{Command: "ADD", ContainerID: "cid-a12", Netns: pod.Path(), IfName: "eth0", Stdin: conf})
	if out.RC != 0 {
		t.Fatalf("chained ADD: %s", out.Stdout)
	}
	var res current.Result
	if err := json.Unmarshal(out.Stdout, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Interfaces) != 4 || res.Interfaces[0].Name != "foreign0" || res.Interfaces[3].Name != "eth0" {
		t.Fatalf("interfaces: %v", res.Interfaces)
	}
	if len(res.IPs) != 2 || *res.IPs[0].Interface != 0 || *res.IPs[1].Interface != 3 {
		t.Fatalf("ips: %v", res.IPs)
	}
	del := f.exec(harness.Call{Command: "DEL", ContainerID: "cid-a12", Netns: pod.Path(), IfName: "eth0", Stdin: conf})
	if del.RC != 0 {
		t.Fatalf("DEL: %s", del.Stdout)
	}
	f.expectClean(before)
}

// A13: the mac and ips capabilities, args.cni and CNI_ARGS, through libcni.
func TestCapabilities(t *testing.T) {
	withCaps := func(c map[string]any) { c["capabilities"] = map[string]bool{"mac": true, "ips": true} }
	cases := []struct {
		name    string
		mods    []func(map[string]any)
		rt      func(*libcni.RuntimeConf)
		wantMAC string
		wantIP  string
	}{
		{"runtimeConfig", []func(map[string]any){withCaps}, func(rt *libcni.RuntimeConf) {
			rt.CapabilityArgs = map[string]any{"mac": "0a:00:00:00:00:01", "ips": []string{"10.77.0.77/24"}}
			rt.Args = [][2]string{{"IgnoreUnknown", "1"}, {"MAC", "0a:00:00:00:00:02"}}
		}, "0a:00:00:00:00:01", "10.77.0.77"},
		{"args.cni", []func(map[string]any){func(c map[string]any) {
			c["args"] = map[string]any{"cni": map[string]any{"mac": "0a:00:00:00:00:03", "ips": []string{"10.77.0.78/24"}}}
		}}, func(rt *libcni.RuntimeConf) {
			rt.Args = [][2]string{{"IgnoreUnknown", "1"}, {"MAC", "0a:00:00:00:00:04"}}
		}, "0a:00:00:00:00:03", "10.77.0.78"},
		{"CNI_ARGS", nil, func(rt *libcni.RuntimeConf) {
			rt.Args = [][2]string{{"IgnoreUnknown", "1"}, {"MAC", "0a:00:00:00:00:05"}, {"IP", "10.77.0.79"}}
		}, "0a:00:00:00:00:05", "10.77.0.79"},
		{"config mac", []func(map[string]any){func(c map[string]any) { c["mac"] = "0a:00:00:00:00:06" }}, nil, "0a:00:00:00:00:06", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			pod := f.pod()
			before := f.snapshot()
			r := f.runtime(f.conf("1.1.0", c.mods...))
			rt := rtConf("cid-a13", pod, "eth0")
			if c.rt != nil {
				c.rt(rt)
			}
			res, err := r.add(rt)
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Interfaces[2].Mac; got != c.wantMAC {
				t.Errorf("guest MAC %s, want %s", got, c.wantMAC)
			}
			if got := res.IPs[0].Address.IP.String(); c.wantIP != "" && got != c.wantIP {
				t.Errorf("IP %s, want %s", got, c.wantIP)
			}
			f.expectPodDevices(pod, "eth0", res.Interfaces[1].Name, c.wantMAC)
			if err := r.del(rt); err != nil {
				t.Fatal(err)
			}
			f.expectClean(before)
		})
	}
}
