package main

import (
	"context"
	"fmt"
	"path/filepath"
)

// memResult is peak RSS in KiB per sample.
type memResult struct {
	add, del map[string][]float64  // by variant key
	floor    []float64             // the trivial binary through the launcher
	split    map[string][]rssSplit // mid-ADD
	splitDel map[string][]rssSplit // mid-DEL
}

// measureMemory runs single ADD/DEL pairs through the launcher, the
// plugins alternating, and the trivial binary for the floor.
func (b *bench) measureMemory(ctx context.Context) (*memResult, error) {
	if err := b.ensurePods(1); err != nil {
		return nil, err
	}
	tb, noSpoof, br := b.cpVariants()
	res := &memResult{add: map[string][]float64{}, del: map[string][]float64{}, split: map[string][]rssSplit{}, splitDel: map[string][]rssSplit{}}
	samples := max(b.opts.Runs, 3)
	slowPath, err := b.slowIPAMPath()
	if err != nil {
		return nil, err
	}
	err = inNS(b.node, func() error {
		for r := range samples {
			order := []cpVariant{tb, noSpoof, br}
			if r%2 == 1 {
				order = reversed(order)
			}
			for _, v := range order {
				if err := b.memSample(ctx, v, r, res); err != nil {
					return err
				}
				split, splitDel, err := b.sampleRSS(ctx, v, slowPath, r)
				if err != nil {
					return err
				}
				res.split[v.Key] = append(res.split[v.Key], split)
				res.splitDel[v.Key] = append(res.splitDel[v.Key], splitDel)
			}
			f, err := pluginCall{Bin: b.trivial}.runMeasured(ctx, b.launcher)
			if err != nil {
				return err
			}
			res.floor = append(res.floor, float64(f.MaxRSSKB))
		}
		return nil
	})
	return res, err
}

func (b *bench) memSample(ctx context.Context, v cpVariant, r int, res *memResult) error {
	conf := v.Conf(filepath.Join(b.dir, "ipam", "mem-"+v.Key))
	c := pluginCall{Bin: v.Bin, Command: "ADD", ContainerID: fmt.Sprintf("%s-mem-%s-%d", b.id, v.Key, r),
		Netns: b.pods[0].Path(), IfName: podIfName, Path: b.cniPath(), Stdin: conf}
	add, err := c.runMeasured(ctx, b.launcher)
	if err != nil {
		return err
	}
	c.Command, c.Stdin = "DEL", withPrevResult(conf, add.Stdout)
	del, err := c.runMeasured(ctx, b.launcher)
	if err != nil {
		return err
	}
	res.add[v.Key] = append(res.add[v.Key], float64(add.MaxRSSKB))
	res.del[v.Key] = append(res.del[v.Key], float64(del.MaxRSSKB))
	return nil
}

func (b *bench) sectionMemory(ctx context.Context, rep *report) error {
	m, err := b.measureMemory(ctx)
	if err != nil {
		return err
	}
	mib := func(kb float64) string { return fmt.Sprintf("%.1f", kb/1024) }
	const sec = "Memory"
	for _, c := range []struct {
		what string
		by   map[string][]float64
	}{{"peak RSS of one ADD, MiB (incl. the IPAM child)", m.add}, {"peak RSS of one DEL, MiB (incl. the IPAM child)", m.del}} {
		t, r, ns := median(c.by["tb"]), median(c.by["bridge"]), median(c.by["tb-nospoof"])
		rep.add(withTarget(row{Section: sec, What: c.what, TB: mib(t), Ref: "bridge: " + mib(r)}, t/r, true, 1))
		rep.add(info(row{Section: sec, What: c.what + `, "spoofCheck": false`, TB: mib(ns), Ref: "bridge: " + mib(r)}, ns/r))
	}
	// /proc/<pid>/status reads the memory counters exactly; wait4's
	// ru_maxrss comes from the kernel's approximate (per-CPU batched)
	// counters, off by up to a few hundred KiB either way on this machine.
	// So these exact mid-call readings are shown beside the peaks.
	for _, c := range []struct {
		call string
		by   map[string][]rssSplit
	}{{"ADD", m.split}, {"DEL", m.splitDel}} {
		part := func(key string, pick func(rssSplit) float64) float64 {
			var v []float64
			for _, s := range c.by[key] {
				v = append(v, pick(s))
			}
			return median(v)
		}
		anon := func(s rssSplit) float64 { return s.anon }
		file := func(s rssSplit) float64 { return s.file }
		total := func(s rssSplit) float64 { return s.anon + s.file }
		show := func(key string) string {
			return mib(part(key, anon)) + " / " + mib(part(key, file)) + " / " + mib(part(key, total))
		}
		rep.add(info(row{Section: sec, What: "RSS of the plugin in the middle of one " + c.call + " (its IPAM held 300 ms; /proc, exact), MiB: anonymous (what the call allocates) / file-backed (its binary's pages, from the page cache every call shares) / total",
			TB: show("tb"), Ref: "bridge: " + show("bridge")}, part("tb", total)/part("bridge", total)))
	}
	rep.add(row{Section: sec, What: "measurement floor: the launcher running the trivial static Go binary, MiB",
		TB: mib(median(m.floor))})
	return nil
}
