package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// sectionScale ADDs ScaleN pods one by one with static IPAM (each pod its
// own address), then DELs them in the same order, and compares the first
// and last windows: a per-call cost that grows with the attachments on the
// node shows as a ratio above 1. The upstream bridge plugin then does the
// same in a fresh node of its own, as a reference for the growth any
// plugin that attaches veths to one bridge pays (the kernel's bridge port
// add, sysfs and sysctl registration per device, ...).
func (b *bench) sectionScale(ctx context.Context, rep *report) error {
	n, w := b.opts.ScaleN, min(b.opts.Window, b.opts.ScaleN/2)
	m := min(50, w) // spare pods for the in-process kernel steps
	if err := b.ensurePods(n + m); err != nil {
		return err
	}
	spare := b.pods[n : n+m]
	ks0 := &kernelSteps{spoof: true, add: newStepTimes(), del: newStepTimes()}
	ksN := &kernelSteps{spoof: true, add: newStepTimes(), del: newStepTimes()}
	b.waitQuiet(ctx)
	if err := b.runKernelStepsOn(ctx, ks0, spare, "scale0", true); err != nil {
		return fmt.Errorf("scale, kernel steps with none attached: %w", err)
	}
	base := netip.MustParseAddr("10.89.0.0")
	conf := func(i int) []byte {
		return tapbridgeConf(tbOpts{DataDir: filepath.Join(b.dir, "state-scale"), Node: nodeName,
			HostAddr: "10.89.0.250/16", Spoof: true, IPAM: staticIPAM(nthAddr(base, i))})
	}
	b.waitQuiet(ctx)
	r, err := b.runBatch(ctx, batch{Bin: b.tapbridge, Tag: b.id + "-scale", Conf: conf, Pods: b.pods[:n], K: 1,
		Between: func([][]byte) error {
			b.waitQuiet(ctx) // the burst's deferred kernel work (RCU callbacks, workqueues) first
			return b.runKernelStepsOn(ctx, ksN, spare, "scaleN", true)
		}})
	if err != nil {
		return err
	}
	br, err := b.scaleBridge(ctx, n, base)
	if err != nil {
		return fmt.Errorf("scale, bridge plugin: %w", err)
	}
	p50 := func(s []time.Duration) float64 { return ms(percentile(s, 50)) }
	firstAdd, lastAdd := p50(r.Add[:w]), p50(r.Add[n-w:])
	firstDel, lastDel := p50(r.Del[:w]), p50(r.Del[n-w:])
	sec := fmt.Sprintf("Scale N=%d, static IPAM", n)
	rep.add(withTarget(row{Section: sec, What: fmt.Sprintf("ADD p50 ms, last %d (with %d attached) vs first %d", w, n-w, w),
		TB: fmt.Sprintf("%.2f", lastAdd), Ref: fmt.Sprintf("first %d: %.2f", w, firstAdd)}, lastAdd/firstAdd, true, 1.2))
	b.scaleKernelRows(rep, sec, n, firstAdd, lastAdd, ks0.add, ksN.add)
	bFirstAdd, bLastAdd := p50(br.Add[:w]), p50(br.Add[n-w:])
	rep.add(info(row{Section: sec, What: fmt.Sprintf("bridge plugin ADD p50 ms, last %d (with %d attached) vs first %d: the growth inherent to attaching veths to one bridge (own fresh node, run right after tapbridge)", w, n-w, w),
		TB: fmt.Sprintf("bridge: %.2f", bLastAdd), Ref: fmt.Sprintf("bridge first %d: %.2f", w, bFirstAdd)}, bLastAdd/bFirstAdd))
	rep.add(info(row{Section: sec, What: fmt.Sprintf("DEL p50 ms, first %d (with %d attached) vs last %d", w, n, w),
		TB: fmt.Sprintf("%.2f", firstDel), Ref: fmt.Sprintf("last %d: %.2f", w, lastDel)}, firstDel/lastDel))
	bFirstDel, bLastDel := p50(br.Del[:w]), p50(br.Del[n-w:])
	rep.add(info(row{Section: sec, What: fmt.Sprintf("bridge plugin DEL p50 ms, first %d (with %d attached) vs last %d", w, n, w),
		TB: fmt.Sprintf("bridge: %.2f", bFirstDel), Ref: fmt.Sprintf("bridge last %d: %.2f", w, bLastDel)}, bFirstDel/bLastDel))
	// The windows are a minute apart on a shared machine: CPU time per call
	// drifts less with other tenants' load than wall time does.
	fc, lc := p50(r.AddCPU[:w]), p50(r.AddCPU[n-w:])
	rep.add(info(row{Section: sec, What: fmt.Sprintf("ADD CPU ms p50 (user+sys incl. IPAM), last %d vs first %d", w, w),
		TB: fmt.Sprintf("%.2f", lc), Ref: fmt.Sprintf("first %d: %.2f", w, fc)}, lc/fc))
	bfc, blc := p50(br.AddCPU[:w]), p50(br.AddCPU[n-w:])
	rep.add(info(row{Section: sec, What: fmt.Sprintf("bridge plugin ADD CPU ms p50 (user+sys incl. IPAM), last %d vs first %d", w, w),
		TB: fmt.Sprintf("bridge: %.2f", blc), Ref: fmt.Sprintf("bridge first %d: %.2f", w, bfc)}, blc/bfc))
	logf("scale: ADD p50 first %.2f last %.2f ms (CPU %.2f, %.2f); DEL p50 first %.2f last %.2f ms",
		firstAdd, lastAdd, fc, lc, firstDel, lastDel)
	logf("scale, bridge plugin: ADD p50 first %.2f last %.2f ms (CPU %.2f, %.2f); DEL p50 first %.2f last %.2f ms",
		bFirstAdd, bLastAdd, bfc, blc, bFirstDel, bLastDel)
	return nil
}

// scaleBridge is the scale batch of the upstream bridge plugin, with the
// same static addresses and pods, in a fresh node (br-ext and an uplink,
// as the control-plane node has) that is dropped afterwards. Every pod is
// DELed, and the node and pods are checked to be as they were.
func (b *bench) scaleBridge(ctx context.Context, n int, base netip.Addr) (batchResult, error) {
	const tag = "scale-br"
	node, err := b.newNode(tag, net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0xbe, 0x02})
	if node.Name != "" { // made, if maybe not set up: the registry's cleanup would get it, but do it now
		defer func() {
			if err := b.reg.drop(node, harness.Netns{Name: node.Name + "-peer"}); err != nil {
				logf("scale: remove %s: %v", node.Name, err)
			}
		}()
	}
	if err != nil {
		return batchResult{}, err
	}
	conf := func(i int) []byte { return bridgeConf(staticIPAM(nthAddr(base, i))) }
	b.waitQuiet(ctx)
	r, err := b.runBatch(ctx, batch{Bin: b.upstream("bridge"), Tag: b.id + "-scale-br", Conf: conf,
		Pods: b.pods[:n], K: 1, Node: &node})
	if err != nil {
		return r, err
	}
	return r, b.leftBehind(node, b.pods[:n])
}

// leftBehind fails if a node has links besides its own (lo, br-ext,
// uplink0) or a pod anything besides lo: what the plugin made is gone.
func (b *bench) leftBehind(node harness.Netns, pods []harness.Netns) error {
	check := func(ns harness.Netns, want ...string) error {
		return inNS(ns, func() error {
			links, err := netlink.LinkList()
			if err != nil {
				return err
			}
			for _, l := range links {
				if name := l.Attrs().Name; !slices.Contains(want, name) {
					return fmt.Errorf("%s left behind in %s", name, ns.Name)
				}
			}
			return nil
		})
	}
	if err := check(node, "lo", bridgeName, "uplink0"); err != nil {
		return err
	}
	for _, p := range pods {
		if err := check(p, "lo"); err != nil {
			return err
		}
	}
	return nil
}

// scaleKernelRows compare the in-process kernel steps of one attachment
// (what an ADD asks of the kernel, no process, files or IPAM) on the empty
// node and with n attached. Their growth is the kernel's: any plugin that
// makes these objects pays it. It is no exact bound (measured in-process,
// right after a burst of ADDs, it has come out above the exec'd ADD's own
// growth), so it is shown beside that growth, not subtracted from it.
func (b *bench) scaleKernelRows(rep *report, sec string, n int, first, last float64, k0, kN *stepTimes) {
	s0, sN := ms(k0.p50("total")), ms(kN.p50("total"))
	growth := ""
	for _, name := range kN.order {
		if name == "total" {
			continue
		}
		if growth != "" {
			growth += ", "
		}
		growth += fmt.Sprintf("%s %+.2f", name, ms(kN.p50(name))-ms(k0.p50(name)))
	}
	rep.add(info(row{Section: sec, What: fmt.Sprintf("in-process kernel steps of one ADD (veth, TAP, redirects, links up, bridge addresses, nft), p50 ms, with %d attached vs none: the kernel's own growth, beside tapbridge's whole ADD's", n),
		TB: fmt.Sprintf("%.2f", sN), Ref: fmt.Sprintf("none attached: %.2f; kernel steps %+.2f ms (%s) where tapbridge's exec'd ADD grew %+.2f ms", s0, sN-s0, growth, last-first)}, sN/s0))
}
