package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
)

// PinnedVariant registers on the node a network like network, but whose
// pods bring their own address and MAC, as a migratable VM needs until
// IPAM keeps an address per VM: the "ips" and "mac" capabilities (Multus
// passes a pod's network selection "ips" and "mac" as runtimeConfig) and
// the static IPAM, which hands out exactly runtimeConfig.ips on any node.
// It returns the variant's key, "<network>-pinned", also its name.
func (n *Node) PinnedVariant(network string) (string, error) {
	b, err := os.ReadFile(n.ConflistPath(network))
	if err != nil {
		return "", fmt.Errorf("pinned variant of %s: %w", network, err)
	}
	var list map[string]any
	if err := json.Unmarshal(b, &list); err != nil {
		return "", fmt.Errorf("pinned variant of %s: %w", network, err)
	}
	key := network + "-pinned"
	list["name"] = key
	plugins, _ := list["plugins"].([]any)
	for _, p := range plugins {
		if plugin, _ := p.(map[string]any); plugin["type"] == PluginType {
			plugin["capabilities"] = map[string]any{"mac": true, "ips": true}
			plugin["ipam"] = map[string]any{"type": "static"}
		}
	}
	if b, err = json.Marshal(list); err != nil {
		return "", err
	}
	if _, err := n.SetNetwork(key, b); err != nil {
		return "", err
	}
	return key, nil
}

// BootIncoming starts, on the TAP of target, a QEMU waiting for the live
// migration of the guest g describes (booted on another pod): the same
// image, kernel command line, MAC and devices, as KubeVirt's target
// domain. It returns once QEMU waits ("inmigrate"); until the migration
// completes the guest does not run there, so nothing leaves the TAP.
func (c *Cluster) BootIncoming(ctx context.Context, img guest.Image, g Guest, target *Pod) (*VM, error) {
	if target.MAC.String() != g.Pod.MAC.String() {
		return nil, fmt.Errorf("boot incoming on %s: MAC %s, the guest's is %s", target.Name, target.MAC, g.Pod.MAC)
	}
	vm, err := guest.Boot(ctx, guest.BootOptions{
		Image:     img,
		NetNSPath: target.NS.Path(),
		TapName:   target.Tap,
		MAC:       g.Pod.MAC,
		Queues:    g.Queues,
		Cmdline:   g.Cmdline(),
		Console:   g.Console,
		Incoming:  true,
	})
	if err != nil {
		return nil, fmt.Errorf("boot incoming on %s: %w", target.Name, err)
	}
	c.onClose(vm.Stop)
	if err := vm.WaitStatus(ctx, "inmigrate"); err != nil {
		return nil, fmt.Errorf("boot incoming on %s: %w\nqemu output:\n%s", target.Name, err, vm.Output())
	}
	return &VM{VM: vm, Pod: target}, nil
}
