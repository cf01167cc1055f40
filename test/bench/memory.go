package main

import (
	"context"
	"fmt"
	"path/filepath"
)

// memResult is peak RSS in KiB per sample.
type memResult struct {
	add, del map[string][]float64 // by variant key
	floor    []float64            // the trivial binary through the launcher
	split    map[string][]rssSplit
}

// measureMemory runs single ADD/DEL pairs through the launcher, the
// plugins alternating, and the trivial binary for the floor.
func (b *bench) measureMemory(ctx context.Context) (*memResult, error) {
	if err := b.ensurePods(1); err != nil {
		return nil, err
	}
	tb, noSpoof, br := b.cpVariants()
	res := &memResult{add: map[string][]float64{}, del: map[string][]float64{}, split: map[string][]rssSplit{}}
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
				split, err := b.sampleRSS(ctx, v, slowPath, r)
				if err != nil {
					return err
				}
				res.split[v.Key] = append(res.split[v.Key], split)
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
	part := func(key string, anon bool) float64 {
		var v []float64
		for _, s := range m.split[key] {
			if anon {
				v = append(v, s.anon)
			} else {
				v = append(v, s.file)
			}
		}
		return median(v)
	}
	ta, tf, ra, rf := part("tb", true), part("tb", false), part("bridge", true), part("bridge", false)
	rep.add(info(row{Section: sec, What: "RSS of the plugin in the middle of an ADD (its IPAM held 300 ms), MiB: anonymous (what the call allocates) / file-backed (its binary's pages, from the page cache every call shares)",
		TB: mib(ta) + " / " + mib(tf), Ref: "bridge: " + mib(ra) + " / " + mib(rf)}, ta/ra))
	rep.add(row{Section: sec, What: "measurement floor: the launcher running the trivial static Go binary, MiB",
		TB: mib(median(m.floor))})
	return nil
}
