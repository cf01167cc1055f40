package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// A10: STATUS is 0 when an ADD could work, 50 (naming the cause) when not.
func TestStatus(t *testing.T) {
	f := newFixture(t)
	if err := f.runtime(f.conf("1.1.0")).status(); err != nil {
		t.Fatalf("healthy STATUS: %v", err)
	}
	notWritable := filepath.Join(f.dir, "a-file")
	if err := os.WriteFile(notWritable, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		conf []byte
		env  []string
		bin  string
		want string
	}{
		{"bridge missing", f.conf("1.1.0", func(c map[string]any) { c["bridge"] = "br-nope" }), nil, "", "br-nope"},
		{"state dir not writable", f.conf("1.1.0", func(c map[string]any) { c["dataDir"] = notWritable + "/state" }), nil, "", "state dir"},
		{"IPAM unavailable", f.conf("1.1.0", func(c map[string]any) { c["ipam"].(map[string]any)["type"] = "no-such-ipam" }), nil, "", "no-such-ipam"},
		{"kernel lacks a feature", f.conf("1.1.0"), []string{"TAPBRIDGE_FAILPOINT=kernel-check:error"}, filepath.Join(failpointsDir, "tapbridge-cni"), "kernel-check"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := f.exec(harness.Call{Command: "STATUS", Stdin: c.conf, Extra: c.env, Binary: c.bin})
			if out.RC == 0 || out.Err.Code != 50 || !strings.Contains(out.Err.Msg, c.want) {
				t.Fatalf("STATUS: rc %d %s, want code 50 naming %q", out.RC, out.Stdout, c.want)
			}
		})
	}
	t.Run("bridge down", func(t *testing.T) {
		setBridge(t, f, false)
		defer setBridge(t, f, true)
		out := f.exec(harness.Call{Command: "STATUS", Stdin: f.conf("1.1.0")})
		if out.RC == 0 || out.Err.Code != 50 || !strings.Contains(out.Err.Msg, "down") {
			t.Fatalf("STATUS with the bridge down: rc %d %s", out.RC, out.Stdout)
		}
	})
	t.Run("refused below 1.1.0", func(t *testing.T) {
		out := f.exec(harness.Call{Command: "STATUS", Stdin: f.conf("1.0.0")})
		if out.RC == 0 || out.Err.Code != 1 {
			t.Fatalf("STATUS at 1.0.0: rc %d %s", out.RC, out.Stdout)
		}
	})
}

func setBridge(t *testing.T, f *fixture, up bool) {
	t.Helper()
	err := f.node.Host.Do(func() error {
		br := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: harness.BridgeName}}
		if up {
			return netlink.LinkSetUp(br)
		}
		return netlink.LinkSetDown(br)
	})
	if err != nil {
		t.Fatal(err)
	}
}
