package cluster

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
)

// Guest says what a pod's VM does once it is up.
type Guest struct {
	Pod     *Pod
	Ping    []netip.Addr  // tb.ping: probed in order, results on TBPROBE lines
	TCP     []netip.Addr  // tb.tcp, on EchoPort
	Retry   time.Duration // tb.retry: how long each failing probe is retried
	Wait    time.Duration // tb.wait: pause between TBREADY and the first probe
	Watch   netip.Addr    // tb.watch: pinged 10 times a second once the probes are done
	DHCP    bool          // tb.dhcp=1: no address on the command line; udhcpc gets it
	DHCP6   bool          // tb.dhcp6=1: dhclient -6 gets the IPv6 address
	Queues  int           // >1 needs a network with tap.multiQueue
	Console io.Writer     // optional copy of the serial console
}

// Cmdline is the guest's kernel command line: its IPs from the CNI
// result, or the DHCP clients to run instead, its probes, and tb.hold=1
// so it stays up as a responder.
func (g Guest) Cmdline() string {
	args := []string{"tb.name=" + g.Pod.Name, "tb.hold=1"}
	switch {
	case g.DHCP:
		args = append(args, "tb.dhcp=1")
	case g.Pod.IP.IsValid():
		args = append(args, "tb.ip="+g.Pod.IP.String())
	}
	switch {
	case g.DHCP6:
		args = append(args, "tb.dhcp6=1")
	case g.Pod.IP6.IsValid():
		args = append(args, "tb.ip6="+g.Pod.IP6.String())
	}
	if g.Retry > 0 {
		args = append(args, fmt.Sprintf("tb.retry=%d", int(g.Retry.Seconds())))
	}
	if g.Wait > 0 {
		args = append(args, fmt.Sprintf("tb.wait=%d", int(g.Wait.Seconds())))
	}
	if len(g.Ping) > 0 {
		args = append(args, "tb.ping="+joinAddrs(g.Ping, ""))
	}
	if len(g.TCP) > 0 {
		args = append(args, "tb.tcp="+joinAddrs(g.TCP, fmt.Sprintf(":%d", EchoPort)))
	}
	if g.Watch.IsValid() {
		args = append(args, "tb.watch="+g.Watch.String())
	}
	return strings.Join(args, " ")
}

func joinAddrs(addrs []netip.Addr, suffix string) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String() + suffix
	}
	return strings.Join(s, ",")
}

// VM is a guest booted on its pod's TAP.
type VM struct {
	*guest.VM
	Pod   *Pod
	Ready time.Duration // from Boot to TBREADY
	Got   guest.Ready   // TBREADY: the addresses the guest has, and where each came from
}

// Boot starts QEMU on the pod's TAP, inside the pod netns, with the guest
// MAC and IP from the CNI result, and waits for TBREADY. The VM is
// stopped by Close, by ctx, or by the caller.
func (c *Cluster) Boot(ctx context.Context, img guest.Image, g Guest) (*VM, error) {
	start := time.Now()
	vm, err := guest.Boot(ctx, guest.BootOptions{
		Image:     img,
		NetNSPath: g.Pod.NS.Path(),
		TapName:   g.Pod.Tap,
		MAC:       g.Pod.MAC,
		Queues:    g.Queues,
		Cmdline:   g.Cmdline(),
		Console:   g.Console,
	})
	if err != nil {
		return nil, fmt.Errorf("boot %s: %w", g.Pod.Name, err)
	}
	c.onClose(vm.Stop)
	line, err := vm.WaitFor(ctx, "TBREADY")
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("boot %s: %w", g.Pod.Name, err)
		}
		return nil, fmt.Errorf("boot %s: %w\nserial console:\n%s", g.Pod.Name, err, vm.Output())
	}
	got, _ := guest.ParseReady(line)
	return &VM{VM: vm, Pod: g.Pod, Ready: time.Since(start), Got: got}, nil
}

// BootEvent reports progress of BootAll.
type BootEvent struct {
	Guest   Guest
	VM      *VM   // set once ready
	Err     error // set if the boot failed
	Elapsed time.Duration
}

// BootAll boots guests, at most parallel at a time (a TCG boot keeps a
// core busy), in order. progress, if set, is called when a boot starts
// (VM and Err nil), every tick while it runs, and when it ends.
func (c *Cluster) BootAll(ctx context.Context, img guest.Image, guests []Guest, parallel int, tick time.Duration, progress func(BootEvent)) ([]*VM, error) {
	if progress == nil {
		progress = func(BootEvent) {}
	}
	var mu sync.Mutex
	report := func(e BootEvent) { mu.Lock(); defer mu.Unlock(); progress(e) }
	vms := make([]*VM, len(guests))
	errs := make([]error, len(guests))
	sem := make(chan struct{}, max(parallel, 1))
	var wg sync.WaitGroup
	for i, g := range guests {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return vms, ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			vms[i], errs[i] = c.bootReporting(ctx, img, g, tick, report)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return vms, err
		}
	}
	return vms, nil
}

func (c *Cluster) bootReporting(ctx context.Context, img guest.Image, g Guest, tick time.Duration, report func(BootEvent)) (*VM, error) {
	start := time.Now()
	report(BootEvent{Guest: g})
	done := make(chan struct{})
	if tick > 0 {
		go func() {
			t := time.NewTicker(tick)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					report(BootEvent{Guest: g, Elapsed: time.Since(start)})
				}
			}
		}()
	}
	vm, err := c.Boot(ctx, img, g)
	close(done)
	report(BootEvent{Guest: g, VM: vm, Err: err, Elapsed: time.Since(start)})
	return vm, err
}

// Probes waits for the guest's TBDONE and returns its probe results by
// "kind target" (e.g. "ping 172.16.3.11", "tcp 172.16.3.11:7777").
func (vm *VM) Probes(ctx context.Context) (map[string]guest.Probe, error) {
	if _, err := vm.WaitFor(ctx, "TBDONE"); err != nil {
		return nil, fmt.Errorf("%s: %w", vm.Pod.Name, err)
	}
	out := map[string]guest.Probe{}
	for _, p := range vm.Results() {
		out[p.Kind+" "+p.Target] = p
	}
	return out, nil
}
