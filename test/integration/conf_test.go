package integration

import (
	"encoding/json"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// conf is the default network config; mods edit the decoded map.
func (f *fixture) conf(version string, mods ...func(map[string]any)) []byte {
	c := map[string]any{
		"cniVersion": version, "name": "vmnet", "type": "tapbridge-cni",
		"bridge": harness.BridgeName,
		"tap":    map[string]any{"owner": 107, "group": 107},
		"hostAddress": map[string]any{
			"nodeName": "node-a",
			"static":   map[string]any{"node-a": []string{"10.77.0.250/24"}},
		},
		"dataDir": f.stateDir(), "logFile": filepath.Join(f.dir, "plugin.log"), "logLevel": "debug",
		"ipam": map[string]any{
			"type": "host-local", "dataDir": f.ipamDir(),
			"ranges": [][]map[string]any{{{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.10", "rangeEnd": "10.77.0.200"}}},
		},
	}
	for _, m := range mods {
		m(c)
	}
	b, err := json.Marshal(c)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// set returns a conf mod that sets a dotted key ("ipam.ranges").
func set(path string, v any) func(map[string]any) {
	return func(c map[string]any) {
		keys := strings.Split(path, ".")
		m := c
		for _, k := range keys[:len(keys)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[k] = next
			}
			m = next
		}
		m[keys[len(keys)-1]] = v
	}
}

// unset returns a conf mod that removes a dotted key.
func unset(path string) func(map[string]any) {
	return func(c map[string]any) {
		keys := strings.Split(path, ".")
		m := c
		for _, k := range keys[:len(keys)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				return
			}
			m = next
		}
		delete(m, keys[len(keys)-1])
	}
}

// validAttachments sets the GC valid-attachments list (a top-level key,
// dots and all).
func validAttachments(list []types.GCAttachment) func(map[string]any) {
	if list == nil {
		list = []types.GCAttachment{}
	}
	return func(c map[string]any) { c["cni.dev/valid-attachments"] = list }
}

// ipRange sets a one-range host-local pool.
func ipRange(subnet, start, end string) func(map[string]any) {
	return set("ipam.ranges", [][]map[string]any{{{"subnet": subnet, "rangeStart": start, "rangeEnd": end}}})
}

// staticHostAddrs sets this node's static host addresses.
func staticHostAddrs(addrs ...string) func(map[string]any) {
	return set("hostAddress.static", map[string]any{"node-a": addrs})
}

// mods lists conf mods, for tables.
func mods(m ...func(map[string]any)) []func(map[string]any) { return m }

// withPrev adds prevResult (an ADD's stdout) to a config, for CHECK.
func (f *fixture) withPrev(conf, prev []byte) []byte {
	f.t.Helper()
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		f.t.Fatal(err)
	}
	m["prevResult"] = json.RawMessage(prev)
	b, err := json.Marshal(m)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}
