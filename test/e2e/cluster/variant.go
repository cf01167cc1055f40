package cluster

import (
	"encoding/json"
	"fmt"
	"os"
)

// Edit changes the tapbridge plugin of a conflist, for a variant of the
// network on node.
type Edit func(plugin map[string]any, node string)

// Variant registers on the node, under key (also the variant's name), the
// network of the conf dir with edits applied to its tapbridge plugin, and
// returns key. Tests and the demo run variants of the shipped conflists
// (which need no agent) rather than conflists of their own.
func (n *Node) Variant(network, key string, edits ...Edit) (string, error) {
	b, err := os.ReadFile(n.ConflistPath(network))
	if err != nil {
		return "", fmt.Errorf("variant %s of %s: %w", key, network, err)
	}
	return n.VariantOf(b, key, edits...)
}

// VariantOf is Variant of a conflist given as bytes (e.g. the config of
// a NAD of conf/k8s, see kube.NADConfig).
func (n *Node) VariantOf(conflist []byte, key string, edits ...Edit) (string, error) {
	var list map[string]any
	if err := json.Unmarshal(conflist, &list); err != nil {
		return "", fmt.Errorf("variant %s: %w", key, err)
	}
	list["name"] = key
	plugins, _ := list["plugins"].([]any)
	for _, p := range plugins {
		if plugin, _ := p.(map[string]any); plugin["type"] == PluginType {
			for _, edit := range edits {
				edit(plugin, n.Name)
			}
		}
	}
	b, err := json.Marshal(list)
	if err != nil {
		return "", err
	}
	if _, err := n.SetNetwork(key, b); err != nil {
		return "", err
	}
	return key, nil
}

// Pin: the pods bring their own address and MAC, through the "ips" and
// "mac" capabilities (Multus passes a pod's network selection "ips" and
// "mac" as runtimeConfig) and the static IPAM, which hands out exactly
// runtimeConfig.ips on any node.
func Pin(plugin map[string]any, _ string) {
	plugin["capabilities"] = map[string]any{"mac": true, "ips": true}
	plugin["ipam"] = map[string]any{"type": "static"}
}

// Serve: the node agent serves the guests their IPAM addresses
// ("dhcp": {"enabled": true}), with leases of leaseTime ("" for the
// default).
func Serve(leaseTime string) Edit {
	return func(plugin map[string]any, _ string) {
		d := map[string]any{"enabled": true}
		if leaseTime != "" {
			d["leaseTime"] = leaseTime
		}
		plugin["dhcp"] = d
	}
}

// NoIPAM: no IPAM section, so nothing for the agent to serve (dhcp is
// dropped too): the guest gets its address from whatever DHCP server the
// L2 has, and spoofCheck checks its MAC only.
func NoIPAM(plugin map[string]any, _ string) {
	delete(plugin, "ipam")
	delete(plugin, "dhcp")
}
