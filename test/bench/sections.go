package main

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
)

type section struct {
	name string
	run  func(context.Context, *report) error
}

func (b *bench) sections() []section {
	return []section{
		{"control", b.sectionControl},
		{"floor", b.sectionFloor},
		{"memory", b.sectionMemory},
		{"scale", b.sectionScale},
		{"agent", b.sectionAgent},
		{"dataplane", b.sectionDataplane},
		{"cluster-ipam", b.sectionClusterIPAM},
	}
}

func (o options) wants(name string) bool { return listed(o.Only, name) }

// listed reports whether name is in a comma-separated list ("" lists all).
func listed(list, name string) bool {
	if list == "" {
		return true
	}
	for _, s := range strings.Split(list, ",") {
		if strings.TrimSpace(s) == name {
			return true
		}
	}
	return false
}

func (b *bench) sectionControl(ctx context.Context, rep *report) error {
	res, err := b.controlPlane(ctx)
	if err != nil {
		return err
	}
	b.cp = res
	ref := summarize(res["bridge"][1])
	for _, key := range []string{"tb", "tb-nospoof"} {
		label := "Control K=1"
		if key == "tb-nospoof" {
			label += `, "spoofCheck": false`
		}
		b.cpRows(rep, label, summarize(res[key][1]), ref, key == "tb")
	}
	b.cpRows(rep, fmt.Sprintf("Control K=%d", b.opts.K), summarize(res["tb"][b.opts.K]), summarize(res["bridge"][b.opts.K]), true)
	if b.opts.Alt != "" {
		for _, k := range []int{1, b.opts.K} {
			b.cpRows(rep, fmt.Sprintf("Control K=%d, -alt build", k), summarize(res["tb-alt"][k]), summarize(res["bridge"][k]), false)
		}
	}
	return nil
}

// cpRows adds the ADD, DEL and pods/s rows of one variant. The targets
// apply to the default configuration: p50s at K=1, ADD pods/s at K>1.
func (b *bench) cpRows(rep *report, section string, tb, ref cpSummary, targets bool) {
	seq := strings.HasPrefix(section, "Control K=1")
	add := row{Section: section, What: "ADD ms p50 / p90 / p99", TB: fq(tb.Add), Ref: "bridge: " + fq(ref.Add)}
	del := row{Section: section, What: "DEL ms p50 / p90 / p99", TB: fq(tb.Del), Ref: "bridge: " + fq(ref.Del)}
	rates := row{Section: section, What: "pods/s ADD / DEL", TB: fmt.Sprintf("%.0f / %.0f", tb.AddRate, tb.DelRate),
		Ref: fmt.Sprintf("bridge: %.0f / %.0f", ref.AddRate, ref.DelRate)}
	addR, delR := tb.Add.P50/ref.Add.P50, tb.Del.P50/ref.Del.P50
	rateR := tb.AddRate / ref.AddRate
	if targets && seq {
		rep.add(withTarget(add, addR, true, 0.6))
		rep.add(withTarget(del, delR, true, 1.0))
	} else {
		rep.add(info(add, addR))
		rep.add(info(del, delR))
	}
	rep.add(info(row{Section: section, What: "CPU ms per call p50, ADD / DEL (user+sys, incl. the IPAM child)",
		TB: fmt.Sprintf("%.2f / %.2f", tb.AddCPU, tb.DelCPU), Ref: fmt.Sprintf("bridge: %.2f / %.2f", ref.AddCPU, ref.DelCPU)}, tb.AddCPU/ref.AddCPU))
	if targets && !seq {
		rep.add(withTarget(rates, rateR, false, 1.5))
	} else {
		rates = info(rates, rateR)
		rates.Ratio = fmt.Sprintf("%.2f / %.2f", rateR, tb.DelRate/ref.DelRate)
		rep.add(rates)
	}
}

// k1Summaries are the sequential tapbridge and bridge rows of the control
// plane; tapbridge's comes from one batch run here if the control-plane
// section was skipped (then there is no bridge row: ok is false).
func (b *bench) k1Summaries(ctx context.Context) (tb, br cpSummary, ok bool, err error) {
	runs := b.cp["tb"][1]
	if len(runs) == 0 {
		v, _, _ := b.cpVariants()
		r, err := b.cpBatch(ctx, v, 1, 0)
		if err != nil {
			return tb, br, false, err
		}
		runs = []batchResult{r}
	}
	ok = len(b.cp["bridge"][1]) > 0
	if ok {
		br = summarize(b.cp["bridge"][1])
	}
	return summarize(runs), br, ok, nil
}

func (b *bench) sectionFloor(ctx context.Context, rep *report) error {
	f, err := b.measureFloor(ctx)
	if err != nil {
		return err
	}
	tb, br, haveBridge, err := b.k1Summaries(ctx)
	if err != nil {
		return err
	}
	const sec = "Floor"
	rep.add(row{Section: sec, What: "exec of a trivial static Go binary, p50 ms (CPU ms); alternated with the plugins",
		TB: fmt.Sprintf("%.2f (%.2f)", ms(f.trivial), ms(f.trivialCPU))})
	rep.add(row{Section: sec, What: "exec of a minimal Go CNI plugin on skel that delegates IPAM (decodes the config, execs host-local through the reference invoke package, prints its result; creates nothing), ADD p50 ms (CPU ms, incl. host-local); alternated with the plugins",
		TB: fmt.Sprintf("%.2f (%.2f)", ms(f.skel), ms(f.skelCPU)),
		Ref: fmt.Sprintf("trivial exec + host-local alone + %.2f ms (CPU + %.2f): what any Go plugin on the reference libraries that delegates IPAM pays besides its kernel work",
			ms(f.skel-f.trivial-f.ipamAdd), ms(f.skelCPU-f.trivialCPU-f.ipamAddCPU))})
	rep.add(row{Section: sec, What: "host-local exec alone (tapbridge's config), ADD / DEL p50 ms (ADD CPU ms); alternated with the plugins: what bridge pays for its IPAM",
		TB: fmt.Sprintf("%.2f / %.2f (%.2f)", ms(f.ipamAdd), ms(f.ipamDel), ms(f.ipamAddCPU))})
	rep.add(row{Section: sec, What: "host-local in process alone (tapbridge's config, through internal/ipam), ADD / DEL p50 ms (ADD CPU ms): what tapbridge pays for its IPAM",
		TB: fmt.Sprintf("%.2f / %.2f (%.2f)", ms(f.inAdd), ms(f.inDel), ms(f.inAddCPU))})
	h, w := summarize([]batchResult{f.crowdHinted}), summarize([]batchResult{f.crowdWalking})
	rep.add(row{Section: sec, What: fmt.Sprintf("host-local in process with %d other leases in its store, ADD / DEL p50 ms (ADD CPU ms): as tapbridge calls it (a fresh claim, the record's lease: reads no other lease) vs the binary's way (reads every lease, as bridge's host-local does)", crowd),
		TB:    fmt.Sprintf("%.2f / %.2f (%.2f)", h.Add.P50, h.Del.P50, h.AddCPU),
		Ref:   fmt.Sprintf("reading every lease: %.2f / %.2f (%.2f)", w.Add.P50, w.Del.P50, w.AddCPU),
		Ratio: fmt.Sprintf("%.2g / %.2g", h.Add.P50/w.Add.P50, h.Del.P50/w.Del.P50)})
	for _, ks := range []*kernelSteps{f.steps, f.noSpoof} {
		what := "in-process kernel steps of one attachment, ADD / DEL p50 ms"
		if !ks.spoof {
			what += `, "spoofCheck": false`
		}
		rep.add(row{Section: sec, What: what,
			TB:  fmt.Sprintf("%.2f / %.2f", ms(ks.add.p50("total")), ms(ks.del.p50("total"))),
			Ref: "ADD: " + ks.add.breakdown() + "; DEL: " + ks.del.breakdown()})
	}
	// IPAM runs in process, so the whole exec'd call is tapbridge's own:
	// the floor is what it cannot skip, each part measured alone, with the
	// IPAM overlapping the pod side as ADD runs it (see boundRows).
	own := tb.Add.P50
	floor := ms(f.trivial) + addFloorKernel(f)
	rep.add(withTarget(row{Section: sec, What: "tapbridge ADD p50 vs floor (trivial exec + kernel steps, the in-process host-local ADD overlapping the pod side), ms",
		TB: fmt.Sprintf("%.2f", own), Ref: fmt.Sprintf("floor: %.2f", floor)}, own/floor, true, 1.5))
	ownDel := tb.Del.P50
	floorDel := ms(f.trivial) + ms(f.steps.del.p50("total")) + ms(f.inDel)
	rep.add(info(row{Section: sec, What: "tapbridge DEL p50 vs floor (trivial exec + kernel DEL steps + in-process host-local DEL), ms",
		TB: fmt.Sprintf("%.2f", ownDel), Ref: fmt.Sprintf("floor: %.2f", floorDel)}, ownDel/floorDel))
	b.whereTimeGoes(rep, f, tb, br)
	if haveBridge {
		b.boundRows(rep, f, tb, br)
	}
	return nil
}

// whereTimeGoes breaks ADD and DEL down from the in-process runs, and
// the binary's process cost into its page faults.
func (b *bench) whereTimeGoes(rep *report, f *floorData, tb, br cpSummary) {
	const sec = "Floor"
	ip := f.inproc
	rep.add(row{Section: sec, What: "where ADD goes: in-process plugin.Add p50 ms by step (host-local in process)",
		TB: fmt.Sprintf("%.2f", ms(ip.add.p50("total"))), Ref: ip.add.breakdown() + fmt.Sprintf("; config parse %.2f", ms(ip.parseAdd.p50("parse")))})
	rep.add(row{Section: sec, What: "where DEL goes: in-process plugin.Del p50 ms (host-local in process)",
		TB: fmt.Sprintf("%.2f", ms(ip.del.p50("total")))})
	rep.add(row{Section: sec, What: "process cost of the binary: exec ADD p50 − in-process ADD p50, ms",
		TB: fmt.Sprintf("%.2f", tb.Add.P50-ms(ip.add.p50("total")))})
	rep.add(row{Section: sec, What: "exec of tapbridge-cni for VERSION (Go runtime start, package inits, skel; no ADD work) vs the trivial static Go binary, alternated, p50 ms (page faults)",
		TB:  fmt.Sprintf("%.2f (%.0f)", ms(f.version), f.versionFaults),
		Ref: fmt.Sprintf("trivial: %.2f (%.0f)", ms(f.versionTrivial), f.versionTrivialFaults), Ratio: fmt.Sprintf("%.2f", float64(f.version)/float64(f.versionTrivial))})
	if tb.AddFaults > 0 {
		extra := tb.AddFaults - f.versionTrivialFaults
		ref := fmt.Sprintf("trivial Go exec: %.0f", f.versionTrivialFaults)
		if br.AddFaults > 0 {
			ref += fmt.Sprintf("; bridge (its host-local child included): %.0f", br.AddFaults)
		}
		rep.add(row{Section: sec, What: fmt.Sprintf("page faults per exec'd ADD, p50 (wait4's minflt+majflt); at %.1f µs per first touch of a page here, the faults above a trivial exec's are about %.1f ms of the ADD",
			float64(f.faultCost)/1e3, extra*float64(f.faultCost)/1e6),
			TB: fmt.Sprintf("%.0f", tb.AddFaults), Ref: ref})
	}
}

// addSplit splits ADD's kernel steps into the pod side (TAP, redirects,
// pod links up, in one netns switch), which ADD overlaps with its IPAM,
// and the rest, in ms.
func addSplit(f *floorData) (serial, podSide float64) {
	k := f.steps.add
	podSide = ms(k.p50("pod"))
	return ms(k.p50("total")) - podSide, podSide
}

// addFloorKernel is ADD's kernel steps and in-process IPAM as ADD runs
// them: the IPAM overlaps the pod side, in ms.
func addFloorKernel(f *floorData) float64 {
	serial, podSide := addSplit(f)
	return serial + max(ms(f.inAdd), podSide)
}

// boundRows compare what any tapbridge call must cost at least (the floor
// parts it cannot skip) with the figure a target asks for: a floor above
// the target proves the target unreachable on this machine. The ADD floor
// overlaps IPAM with the pod side (TAP, redirects, links up), as ADD does.
func (b *bench) boundRows(rep *report, f *floorData, tb, br cpSummary) {
	const sec = "Floor bound"
	bound := func(what string, floor, want, measured float64, wantDesc string) {
		x := row{Section: sec, What: what, TB: fmt.Sprintf("%.2f", floor), Ref: fmt.Sprintf("%s: %.2f", wantDesc, want),
			Ratio: fmt.Sprintf("%.2f", floor/want), Target: "floor ≤ target", Result: "reachable"}
		switch {
		case measured > 0 && floor > measured:
			// The in-process steps ran back to back, each waiting a whole
			// grace period; an exec'd call finds one under way.
			x.Result = fmt.Sprintf("not a bound: tapbridge measured %.2f", measured)
		case floor > want:
			x.Result = "UNREACHABLE"
		}
		rep.add(x)
	}
	serial, podSide := addSplit(f)
	bound("least possible tapbridge ADD, ms: trivial exec + kernel steps, the in-process host-local ADD overlapping the pod side (TAP, redirects, links up) as ADD does",
		ms(f.trivial)+addFloorKernel(f), 0.6*br.Add.P50, tb.Add.P50, "ADD target 0.6 × bridge ADD p50")
	// For comparison, what a plugin that execs its IPAM (bridge's way)
	// cannot go below: the minimal skel plugin's exec, host-local included.
	bound("… the same for a Go plugin on skel that execs host-local, as bridge does: the minimal skel plugin's exec (host-local included) instead of trivial exec + in-process host-local, ms",
		ms(f.skel)+serial+max(0, podSide-ms(f.ipamAdd)), 0.6*br.Add.P50, 0, "ADD target 0.6 × bridge ADD p50")
	// No bound for DEL: link removal measured in-process, back to back,
	// waits a whole grace period each time, where an exec'd DEL often
	// finds one under way, and tapbridge's DEL has come in below this sum.
	// A verdict would then depend on which of DEL's two modes a run caught.
	delSum := ms(f.trivial) + ms(f.inDel) + ms(f.steps.del.p50("total"))
	rep.add(info(row{Section: sec, What: "tapbridge DEL as trivial exec + in-process host-local DEL + in-process kernel DEL steps (nft, links), ms: no bound (see the notes)",
		TB: fmt.Sprintf("%.2f", delSum), Ref: fmt.Sprintf("DEL target 1.0 × bridge DEL p50: %.2f; tapbridge measured %.2f", br.Del.P50, tb.Del.P50)}, delSum/br.Del.P50))
	cpuFloor := ms(f.trivialCPU) + ms(f.inAddCPU) + ms(percentile(f.steps.cpu, 50))
	bound(fmt.Sprintf("least CPU of a tapbridge ADD, ms (trivial exec + in-process host-local + kernel steps); K=%d on %d CPU-bound cores gives pods/s ≈ cores / CPU per ADD", b.opts.K, runtime.NumCPU()),
		cpuFloor, br.AddCPU/1.5, 0, "K=8 target: bridge CPU per ADD / 1.5")
	rep.add(info(row{Section: sec, What: "tapbridge CPU per ADD p50 vs that CPU floor, ms: what tapbridge's own process and files add",
		TB: fmt.Sprintf("%.2f", tb.AddCPU), Ref: fmt.Sprintf("CPU floor: %.2f; K=8 target: %.2f", cpuFloor, br.AddCPU/1.5)}, tb.AddCPU/cpuFloor))
	bound("… the same for a Go plugin on skel that execs host-local, as bridge does (the minimal skel plugin's CPU, host-local included, instead of trivial exec + in-process host-local), ms",
		ms(f.skelCPU)+ms(percentile(f.steps.cpu, 50)), br.AddCPU/1.5, 0, "K=8 target: bridge CPU per ADD / 1.5")
}

func (b *bench) sectionDataplane(ctx context.Context, rep *report) error {
	res, err := b.dataPlane(ctx)
	if err != nil {
		return err
	}
	if b.opts.Layouts != "" {
		return nil // a profiling run: the log has the figures
	}
	rate := func(key, size string, eth int) string {
		fps := res[key].fps(size)
		return fmt.Sprintf("%.1fk (%.2f Gbit/s)", fps/1000, fps*float64(eth)*8/1e9)
	}
	perCPU := func(key, size string) string { return fmt.Sprintf("%.1fk", res[key].perCPU(size)/1000) }
	for _, s := range frameSizes {
		sec := "Data plane " + s.label
		tb := res["tb"].fps(s.label)
		what := "frames/s received (Gbit/s), TAP on node A → TAP on node B"
		rep.add(withTarget(row{Section: sec, What: what, TB: rate("tb", s.label, s.eth),
			Ref: "direct TAP on br-ext: " + rate("direct", s.label, s.eth)}, tb/res["direct"].fps(s.label), false, 0.9))
		rep.add(withTarget(row{Section: sec, What: what, TB: rate("tb", s.label, s.eth),
			Ref: "in-pod bridge: " + rate("inpod", s.label, s.eth) + "; per round: " + pairedRatios(res["tb"], res["inpod"], s.label)},
			tb/res["inpod"].fps(s.label), false, 1.2))
		rep.add(info(row{Section: sec, What: what + `, "spoofCheck": false`, TB: rate("tb-nospoof", s.label, s.eth),
			Ref: "direct TAP on br-ext: " + rate("direct", s.label, s.eth)}, res["tb-nospoof"].fps(s.label)/res["direct"].fps(s.label)))
		rep.add(info(row{Section: sec, What: "frames per CPU-second of the writer thread (noise-resistant), tapbridge / tapbridge spoofCheck false",
			TB:  perCPU("tb", s.label) + " / " + perCPU("tb-nospoof", s.label),
			Ref: "direct: " + perCPU("direct", s.label) + "; in-pod bridge: " + perCPU("inpod", s.label)},
			res["tb"].perCPU(s.label)/res["direct"].perCPU(s.label)))
	}
	us := func(key string) string {
		return fmt.Sprintf("%.0f / %.0f", median(res[key].latP50), median(res[key].latP99))
	}
	rep.add(info(row{Section: "Data plane 64 B", What: "one-way latency µs p50 / p99 (paced frames, timestamp in the payload; medians of 4 rounds)",
		TB: us("tb"), Ref: "direct: " + us("direct") + "; in-pod bridge: " + us("inpod")},
		median(res["tb"].latP50)/median(res["direct"].latP50)))
	b.vethFloorRows(rep, res, rate, perCPU)
	rep.add(info(row{Section: "Data plane 64 B", What: "one-way latency µs p50 / p99, veth floor (packet socket on the pod end of a veth; medians of 4 rounds)",
		TB: us("tb"), Ref: "veth floor: " + us("vethfloor") + "; direct: " + us("direct")},
		median(res["tb"].latP50)/median(res["vethfloor"].latP50)))
	return nil
}

// vethFloorRows set tapbridge and the ≥0.9× direct TAP target against the
// veth floor, the cheapest data path of any design that joins the VM to
// br-ext through a veth (a bridge port must be in the host netns, QEMU's
// TAP is in the pod's): when the floor itself is below 0.9× direct, no
// such design, tapbridge included, can meet the target on this machine.
func (b *bench) vethFloorRows(rep *report, res map[string]*dpResult, rate func(key, size string, eth int) string, perCPU func(key, size string) string) {
	for _, s := range frameSizes {
		sec := "Data plane " + s.label
		floor, direct := res["vethfloor"].fps(s.label), res["direct"].fps(s.label)
		rep.add(info(row{Section: sec, What: "frames/s received (Gbit/s), veth floor (packet socket on the pod end of a veth on br-ext; no TAP, no tc), node A → node B",
			TB: "veth floor: " + rate("vethfloor", s.label, s.eth), Ref: fmt.Sprintf("direct TAP on br-ext: %s; per writer CPU-s: floor %.1fk, direct %.1fk",
				rate("direct", s.label, s.eth), res["vethfloor"].perCPU(s.label)/1000, res["direct"].perCPU(s.label)/1000)}, floor/direct))
		rep.add(withTarget(row{Section: sec, What: "tapbridge frames/s vs the veth floor: what the TAP, the tc redirects and anti-spoofing cost on top of the mandatory veth hop",
			TB: rate("tb", s.label, s.eth), Ref: fmt.Sprintf("veth floor: %s; per round: %s; spoofCheck false / floor: %.2f",
				rate("vethfloor", s.label, s.eth), pairedRatios(res["tb"], res["vethfloor"], s.label), res["tb-nospoof"].fps(s.label)/floor)},
			res["tb"].fps(s.label)/floor, false, 0.95))
		rep.add(info(row{Section: sec, What: "where anti-spoofing's cost goes, frames/s and per writer CPU-s: spoofCheck false → + an empty ingress chain on the port (the hook alone) → + the rules (tapbridge)",
			TB: fmt.Sprintf("%s → %s → %s; per CPU-s %s → %s → %s", rate("tb-nospoof", s.label, s.eth), rate("tb-hook", s.label, s.eth), rate("tb", s.label, s.eth),
				perCPU("tb-nospoof", s.label), perCPU("tb-hook", s.label), perCPU("tb", s.label)),
			Ref: fmt.Sprintf("hook alone: %.2f× (per CPU-s %.2f×, per round %s); rules: %.2f× (per CPU-s %.2f×, per round %s)",
				res["tb-hook"].fps(s.label)/res["tb-nospoof"].fps(s.label), res["tb-hook"].perCPU(s.label)/res["tb-nospoof"].perCPU(s.label),
				pairedRatios(res["tb-hook"], res["tb-nospoof"], s.label),
				res["tb"].fps(s.label)/res["tb-hook"].fps(s.label), res["tb"].perCPU(s.label)/res["tb-hook"].perCPU(s.label),
				pairedRatios(res["tb"], res["tb-hook"], s.label))}, res["tb"].fps(s.label)/res["tb-nospoof"].fps(s.label)))
	}
	for _, s := range frameSizes {
		floor, direct := res["vethfloor"].fps(s.label), res["direct"].fps(s.label)
		x := floor / direct
		r := row{Section: "Data plane bound", What: s.label + ": veth floor frames/s vs the ≥0.9× direct TAP target; below 0.9 the target is unreachable for any design that joins the VM through a veth",
			TB:    fmt.Sprintf("veth floor / direct = %.2f (%.1fk / %.1fk)", x, floor/1000, direct/1000),
			Ref:   fmt.Sprintf("target: 0.9 × direct = %.1fk; per round (adjacent in time) floor / direct: %s", 0.9*direct/1000, pairedRatios(res["vethfloor"], res["direct"], s.label)),
			Ratio: fmt.Sprintf("%.2f", x), Target: "floor ≥ 0.9× direct", Result: "reachable"}
		if x < 0.9 {
			r.Result = "UNREACHABLE"
		}
		rep.add(r)
	}
}

// pairedRatios is the spread of a/b over the interleaved rounds, each a
// pair measured moments apart: how far one verdict is from the noise.
func pairedRatios(a, b *dpResult, size string) string {
	var v []float64
	for i := range min(len(a.rates[size]), len(b.rates[size])) {
		v = append(v, a.rates[size][i].FPS/b.rates[size][i].FPS)
	}
	if len(v) == 0 {
		return "none"
	}
	return fmt.Sprintf("min %.2f, median %.2f, max %.2f", slices.Min(v), median(v), slices.Max(v))
}
