// Package conf holds the deployable configuration: the per-node conflists
// that the end-to-end suite and `make demo` run (cni/<node>/), the
// Kubernetes manifests (k8s/) and the KubeVirt ones (kubevirt/). This test
// keeps them from rotting: every CNI config goes through the plugin's own
// loader, every YAML document is parsed, and the cross-references between
// them (NAD names, bindings, multi-queue, host addresses outside the IPAM
// ranges) are checked. It needs no root.
package conf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tapbridge/tapbridge-cni/internal/config"
)

const pluginType = "tapbridge-cni"

// network is one CNI network found in conf/, with its tapbridge plugin
// config as the plugin receives it (name and cniVersion injected).
type network struct {
	where  string // file, and document for YAML
	name   string
	node   string // the node of a per-node file, else ""
	plugin []byte
}

// TestConflists: each per-node conflist is valid for the plugin, is named
// after its file, and names its node.
func TestConflists(t *testing.T) {
	nets := nodeNetworks(t)
	if len(nets) == 0 {
		t.Fatal("no conflists under cni/")
	}
	for _, n := range nets {
		net := parsePlugin(t, n)
		if want := strings.TrimSuffix(filepath.Base(n.where), ".conflist"); n.name != want {
			t.Errorf("%s: network %q, want the file's name %q", n.where, n.name, want)
		}
		if net.Host.Node != n.node {
			t.Errorf("%s: hostAddress.nodeName %q, want the directory's %q", n.where, net.Host.Node, n.node)
		}
	}
}

// TestManifests parses every YAML document and the CNI config embedded in
// each NetworkAttachmentDefinition; a NAD without one must have a per-node
// conflist of the same name for every node.
func TestManifests(t *testing.T) {
	docs := yamlDocs(t)
	nodes := nodeDirs(t)
	for _, d := range docs {
		if d.kind() != "NetworkAttachmentDefinition" {
			continue
		}
		cfg := d.str("spec", "config")
		if cfg == "" {
			for _, node := range nodes {
				if _, err := os.Stat(filepath.Join("cni", node, d.str("metadata", "name")+".conflist")); err != nil {
					t.Errorf("%s: NAD %s has no config and %s has no cni/%s/%s.conflist", d.where, d.str("metadata", "name"), node, node, d.str("metadata", "name"))
				}
			}
			continue
		}
		for _, n := range splitConfig(t, d.where, []byte(cfg)) {
			parsePlugin(t, n)
			if n.name != d.str("metadata", "name") {
				t.Errorf("%s: config name %q differs from the NAD's name %q (Multus uses the NAD's)", d.where, n.name, d.str("metadata", "name"))
			}
		}
	}
}

// TestHostAddressesOutsideIPAM: no IPAM range may hand out a node's host
// address (static or from the pool), and per-node host-local ranges of a
// network must not overlap (or two nodes give out the same IP).
func TestHostAddressesOutsideIPAM(t *testing.T) {
	all := append(nodeNetworks(t), nadNetworks(t)...)
	ranges := map[string][]allocRange{} // network -> per-node host-local ranges
	for _, n := range all {
		var raw config.Raw
		var ipam ipamConf
		if err := json.Unmarshal(n.plugin, &raw); err != nil {
			t.Fatalf("%s: %v", n.where, err)
		}
		_ = json.Unmarshal(n.plugin, &struct {
			IPAM *ipamConf `json:"ipam"`
		}{&ipam})
		rs, err := ipam.ranges()
		if err != nil {
			t.Errorf("%s: %v", n.where, err)
			continue
		}
		for _, host := range hostAddresses(raw.HostAddress) {
			for _, r := range rs {
				if r.overlaps(host) {
					t.Errorf("%s: host address %s is inside the IPAM range %s", n.where, host, r)
				}
			}
		}
		if n.node != "" && ipam.Type == "host-local" {
			for _, r := range rs {
				for _, other := range ranges[n.name] {
					if r.overlapsRange(other) {
						t.Errorf("%s: range %s overlaps %s of another node", n.where, r, other)
					}
				}
			}
			ranges[n.name] = append(ranges[n.name], rs...)
		}
	}
}

// TestKubeVirt: every binding a VM uses is registered with
// domainAttachmentType tap, every Multus network it names is a NAD here,
// and its networkInterfaceMultiqueue agrees with the NAD's tap.multiQueue
// (a mismatch is EINVAL when QEMU opens the TAP).
func TestKubeVirt(t *testing.T) {
	docs := yamlDocs(t)
	bindings := map[string]string{}
	nads := map[string]map[string]any{}
	for _, d := range docs {
		switch d.kind() {
		case "KubeVirt":
			for name, b := range d.obj("spec", "configuration", "network", "binding") {
				bm, _ := b.(map[string]any)
				bindings[name], _ = bm["domainAttachmentType"].(string)
			}
		case "NetworkAttachmentDefinition":
			nads[d.str("metadata", "name")] = d.body
		}
	}
	vms := 0
	for _, d := range docs {
		if d.kind() != "VirtualMachine" {
			continue
		}
		vms++
		spec := doc{where: d.where, body: d.obj("spec", "template", "spec")}
		mq, _ := spec.obj("domain", "devices")["networkInterfaceMultiqueue"].(bool)
		for _, itf := range spec.list("domain", "devices", "interfaces") {
			b, _ := itf["binding"].(map[string]any)
			if name, _ := b["name"].(string); name != "" && bindings[name] != "tap" {
				t.Errorf("%s: interface %v uses binding %q, not registered with domainAttachmentType tap", d.where, itf["name"], name)
			}
		}
		for _, n := range spec.list("networks") {
			m, _ := n["multus"].(map[string]any)
			name, _ := m["networkName"].(string)
			if name == "" {
				continue
			}
			nad, ok := nads[name]
			if !ok {
				t.Errorf("%s: network %s is not a NAD in conf/", d.where, name)
				continue
			}
			checkMultiQueue(t, d.where, doc{body: nad}, mq)
		}
	}
	if vms == 0 || len(bindings) == 0 {
		t.Errorf("found %d VirtualMachines and %d bindings, want at least one each", vms, len(bindings))
	}
}

func checkMultiQueue(t *testing.T, where string, nad doc, vmMQ bool) {
	t.Helper()
	cfg := nad.str("spec", "config")
	if cfg == "" {
		return
	}
	for _, n := range splitConfig(t, where, []byte(cfg)) {
		net := parsePlugin(t, n)
		if net.Tap.MultiQueue != vmMQ {
			t.Errorf("%s: networkInterfaceMultiqueue %v but %s has tap.multiQueue %v", where, vmMQ, n.name, net.Tap.MultiQueue)
		}
	}
}

// TestDaemonSet: the installer mounts /opt/cni/bin and its script is
// valid shell.
func TestDaemonSet(t *testing.T) {
	found := false
	for _, d := range yamlDocs(t) {
		if d.kind() != "DaemonSet" {
			continue
		}
		for _, v := range d.list("spec", "template", "spec", "volumes") {
			hp, _ := v["hostPath"].(map[string]any)
			if hp["path"] == "/opt/cni/bin" {
				found = true
			}
		}
	}
	if !found {
		t.Error("no DaemonSet mounts the host's /opt/cni/bin")
	}
	script, err := os.ReadFile("k8s/install.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, bin := range []string{"tapbridge-cni", "tapbridge-ipam"} {
		if !bytes.Contains(script, []byte("/host/opt/cni/bin/"+bin)) {
			t.Errorf("install.sh does not install %s into /opt/cni/bin", bin)
		}
	}
	if !regexp.MustCompile(`(?m)^COPY conf/k8s/install.sh `).Match(mustRead(t, "k8s/Dockerfile")) {
		t.Error("the Dockerfile does not ship install.sh")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// parsePlugin runs the plugin's loader on n, as for an ADD on n.node
// (node1 when the config names none).
func parsePlugin(t *testing.T, n network) *config.Net {
	t.Helper()
	host := n.node
	if host == "" {
		host = "node1"
	}
	net, err := config.Parse(n.plugin, config.Env{ContainerID: "conf-test", IfName: "pod0123456789a", Hostname: host})
	if err != nil {
		t.Errorf("%s: config.Parse: %v", n.where, err)
		return &config.Net{}
	}
	return net
}

// splitConfig reads a conflist (or a single plugin config) and returns
// its tapbridge plugins with name and cniVersion injected, as libcni and
// Multus do.
func splitConfig(t *testing.T, where string, b []byte) []network {
	t.Helper()
	var list struct {
		Name       string            `json:"name"`
		CNIVersion string            `json:"cniVersion"`
		Type       string            `json:"type"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("%s: not JSON: %v", where, err)
	}
	plugins := list.Plugins
	if list.Type != "" {
		plugins = []json.RawMessage{b}
	}
	var out []network
	for i, p := range plugins {
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			t.Fatalf("%s: plugin %d: %v", where, i, err)
		}
		if m["type"] != pluginType {
			continue
		}
		m["name"], m["cniVersion"] = list.Name, list.CNIVersion
		pb, _ := json.Marshal(m)
		out = append(out, network{where: fmt.Sprintf("%s plugin %d", where, i), name: list.Name, plugin: pb})
	}
	if len(out) == 0 {
		t.Errorf("%s: no %s plugin", where, pluginType)
	}
	return out
}

func nodeDirs(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("cni")
	if err != nil {
		t.Fatal(err)
	}
	var nodes []string
	for _, e := range entries {
		if e.IsDir() {
			nodes = append(nodes, e.Name())
		}
	}
	return nodes
}

func nodeNetworks(t *testing.T) []network {
	t.Helper()
	var out []network
	for _, node := range nodeDirs(t) {
		files, _ := filepath.Glob(filepath.Join("cni", node, "*.conflist"))
		for _, f := range files {
			for _, n := range splitConfig(t, f, mustRead(t, f)) {
				n.where, n.node = f, node
				out = append(out, n)
			}
		}
	}
	return out
}

func nadNetworks(t *testing.T) []network {
	t.Helper()
	var out []network
	for _, d := range yamlDocs(t) {
		if cfg := d.str("spec", "config"); d.kind() == "NetworkAttachmentDefinition" && cfg != "" {
			out = append(out, splitConfig(t, d.where, []byte(cfg))...)
		}
	}
	return out
}
