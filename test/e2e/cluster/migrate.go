package cluster

import (
	"context"
	"fmt"

	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
)

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
