package main

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"
)

// sectionScale ADDs ScaleN pods one by one with static IPAM (each pod its
// own address), then DELs them in the same order, and compares the first
// and last windows: a per-call cost that grows with the attachments on the
// node shows as a ratio above 1.
func (b *bench) sectionScale(ctx context.Context, rep *report) error {
	n, w := b.opts.ScaleN, min(b.opts.Window, b.opts.ScaleN/2)
	if err := b.ensurePods(n); err != nil {
		return err
	}
	base := netip.MustParseAddr("10.89.0.0")
	conf := func(i int) []byte {
		return tapbridgeConf(tbOpts{DataDir: filepath.Join(b.dir, "state-scale"), Node: nodeName,
			HostAddr: "10.89.0.250/16", Spoof: true, IPAM: staticIPAM(nthAddr(base, i))})
	}
	b.waitQuiet(ctx)
	r, err := b.runBatch(ctx, batch{Bin: b.tapbridge, Tag: b.id + "-scale", Conf: conf, Pods: b.pods[:n], K: 1})
	if err != nil {
		return err
	}
	p50 := func(s []time.Duration) float64 { return ms(percentile(s, 50)) }
	firstAdd, lastAdd := p50(r.Add[:w]), p50(r.Add[n-w:])
	firstDel, lastDel := p50(r.Del[:w]), p50(r.Del[n-w:])
	sec := fmt.Sprintf("Scale N=%d, static IPAM", n)
	rep.add(withTarget(row{Section: sec, What: fmt.Sprintf("ADD p50 ms, last %d (with %d attached) vs first %d", w, n-w, w),
		TB: fmt.Sprintf("%.2f", lastAdd), Ref: fmt.Sprintf("first %d: %.2f", w, firstAdd)}, lastAdd/firstAdd, true, 1.2))
	rep.add(info(row{Section: sec, What: fmt.Sprintf("DEL p50 ms, first %d (with %d attached) vs last %d", w, n, w),
		TB: fmt.Sprintf("%.2f", firstDel), Ref: fmt.Sprintf("last %d: %.2f", w, lastDel)}, firstDel/lastDel))
	// The windows are a minute apart on a shared machine: CPU time per call
	// drifts less with other tenants' load than wall time does.
	fc, lc := p50(r.AddCPU[:w]), p50(r.AddCPU[n-w:])
	rep.add(info(row{Section: sec, What: fmt.Sprintf("ADD CPU ms p50 (user+sys incl. IPAM), last %d vs first %d", w, w),
		TB: fmt.Sprintf("%.2f", lc), Ref: fmt.Sprintf("first %d: %.2f", w, fc)}, lc/fc))
	logf("scale: ADD p50 first %.2f last %.2f ms (CPU %.2f, %.2f); DEL p50 first %.2f last %.2f ms",
		firstAdd, lastAdd, fc, lc, firstDel, lastDel)
	return nil
}
