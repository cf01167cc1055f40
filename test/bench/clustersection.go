package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/harness"
	"github.com/tapbridge/tapbridge-cni/test/kube"
)

// clusterBatch is one batch of one IPAM: the calls' times, and what the
// API server did for them, per call.
type clusterBatch struct {
	res              batchResult
	addReqs, delReqs reqCounts
	addSrv, delSrv   time.Duration // kube-apiserver + etcd CPU per call
}

// clusterResults holds the batches by IPAM key and K.
type clusterResults map[string]map[int][]clusterBatch

// sectionClusterIPAM measures tapbridge-ipam and whereabouts side by side
// (see clusterNote for how).
func (b *bench) sectionClusterIPAM(ctx context.Context, rep *report) error {
	if why := clusterIPAMMissing(); why != "" {
		logf("cluster-ipam: skipped: %s", why)
		rep.add(row{Section: "Cluster IPAM", What: "tapbridge-ipam vs whereabouts " + whereaboutsVersion, TB: "skipped: " + why, Result: "skipped"})
		return nil
	}
	tbBin, err := b.ipamBinary()
	if err != nil {
		return err
	}
	n := b.opts.N
	w, err := b.startClusterIPAM(ctx, n)
	if err != nil {
		return fmt.Errorf("start the API server: %w", err)
	}
	res, idle, err := b.clusterBatches(ctx, w, w.kinds(tbBin), n)
	if err != nil {
		return errors.Join(err, w.close())
	}
	if err := w.close(); err != nil {
		return err
	}
	for _, k := range []int{1, b.opts.ClusterK} {
		clusterRows(rep, k, res["tapbridge-ipam"][k], res["whereabouts"][k])
	}
	rep.note("%s", clusterNote(n, b.opts.Runs, b.opts.ClusterK, idle))
	return nil
}

// clusterBatches warms both IPAMs up (one ADD and DEL each: whereabouts
// creates its pool and lease on first use), then runs each IPAM's batches
// alternately, the order flipping run by run.
func (b *bench) clusterBatches(ctx context.Context, w *clusterIPAM, kinds []clusterIPAMKind, n int) (clusterResults, float64, error) {
	for _, kd := range kinds {
		if _, err := b.clusterBatch(ctx, w, kd, 1, "warm", 1); err != nil {
			return nil, 0, fmt.Errorf("warm-up: %w", err)
		}
	}
	idle, err := w.idleRate(ctx, 5*time.Second)
	if err != nil {
		return nil, 0, err
	}
	res := clusterResults{}
	for _, k := range []int{1, b.opts.ClusterK} {
		for r := range b.opts.Runs {
			order := kinds
			if r%2 == 1 {
				order = reversed(kinds)
			}
			for _, kd := range order {
				got, err := b.clusterBatch(ctx, w, kd, k, fmt.Sprintf("k%d-r%d", k, r), n)
				if err != nil {
					return nil, 0, err
				}
				if res[kd.key] == nil {
					res[kd.key] = map[int][]clusterBatch{}
				}
				res[kd.key][k] = append(res[kd.key][k], got)
			}
		}
	}
	return res, idle, nil
}

// idleRate is how many requests per second the API server counts with
// no IPAM running (its own leases and endpoints): the noise in the
// per-call request counts.
func (w *clusterIPAM) idleRate(ctx context.Context, d time.Duration) (float64, error) {
	a, err := w.sample(ctx)
	if err != nil {
		return 0, err
	}
	time.Sleep(d)
	z, err := w.sample(ctx)
	if err != nil {
		return 0, err
	}
	return perCall(a, z, 1).total() / d.Seconds(), nil
}

// clusterBatch ADDs n pods' attachments with k workers, checks that the
// addresses are distinct, DELs them (with the ADD result as prevResult,
// as libcni does), checks that nothing is left in the API, and samples
// the API server around each phase.
func (b *bench) clusterBatch(ctx context.Context, w *clusterIPAM, kd clusterIPAMKind, k int, tag string, n int) (clusterBatch, error) {
	var out clusterBatch
	pods := make([]harness.Netns, n)
	for i := range pods {
		pods[i] = w.podNetns
	}
	b.waitQuiet(ctx)
	before, err := w.sample(ctx)
	if err != nil {
		return out, err
	}
	var added, beforeDel apiSample
	out.res, err = b.runBatch(ctx, batch{Bin: kd.bin, Tag: fmt.Sprintf("%s-%s-%s", b.id, tag, kd.key),
		Conf: func(int) []byte { return kd.conf }, Args: w.podArgs, Pods: pods, K: k, Node: &w.node,
		Between: func(results [][]byte) error {
			var err error
			if added, err = w.sample(ctx); err != nil {
				return err
			}
			if err := addresses(results); err != nil {
				return fmt.Errorf("%s: %w", kd.label, err)
			}
			beforeDel, err = w.sample(ctx)
			return err
		}})
	if err != nil {
		return out, fmt.Errorf("cluster-ipam %s K=%d %s: %w", kd.key, k, tag, err)
	}
	after, err := w.sample(ctx)
	if err != nil {
		return out, err
	}
	if left, err := kd.leftover(ctx); err != nil || left != 0 {
		return out, fmt.Errorf("cluster-ipam %s K=%d %s: %d allocations left after every DEL (%v)", kd.key, k, tag, left, err)
	}
	out.addReqs, out.delReqs = perCall(before, added, n), perCall(beforeDel, after, n)
	out.addSrv, out.delSrv = (added.cpu-before.cpu)/time.Duration(n), (after.cpu-beforeDel.cpu)/time.Duration(n)
	if tag != "warm" {
		r := out.res
		logf("cluster-ipam %-14s K=%-2d %s: ADD p50 %.1f p99 %.1f ms, DEL p50 %.1f p99 %.1f ms, requests per ADD %.2f, per DEL %.2f",
			kd.key, k, tag, ms(percentile(r.Add, 50)), ms(percentile(r.Add, 99)), ms(percentile(r.Del, 50)), ms(percentile(r.Del, 99)),
			out.addReqs.total(), out.delReqs.total())
	}
	return out, nil
}

// clusterSummary is one IPAM's figures at one K: medians over runs, and
// the mean request counts.
type clusterSummary struct {
	cp               cpSummary
	addReqs, delReqs reqCounts
	addSrv, delSrv   float64 // ms, median over runs
}

func summarizeCluster(runs []clusterBatch) clusterSummary {
	var res []batchResult
	var ar, dr []reqCounts
	var as, ds []float64
	for _, r := range runs {
		res, ar, dr = append(res, r.res), append(ar, r.addReqs), append(dr, r.delReqs)
		as, ds = append(as, ms(r.addSrv)), append(ds, ms(r.delSrv))
	}
	return clusterSummary{summarize(res), meanCounts(ar), meanCounts(dr), median(as), median(ds)}
}

// clusterRows are one K's rows: latency, requests, server CPU, the IPAM's
// own CPU and throughput, tapbridge-ipam against whereabouts. The issue
// sets no target for them: information only.
func clusterRows(rep *report, k int, tbRuns, wbRuns []clusterBatch) {
	tb, wb := summarizeCluster(tbRuns), summarizeCluster(wbRuns)
	sec := fmt.Sprintf("Cluster IPAM K=%d", k)
	ref := "whereabouts " + whereaboutsVersion + ": "
	lat := func(what string, t, r quantiles) {
		rep.add(row{Section: sec, What: what + " ms p50 / p99", TB: fmt.Sprintf("%.1f / %.1f", t.P50, t.P99),
			Ref: ref + fmt.Sprintf("%.1f / %.1f", r.P50, r.P99), Ratio: fmt.Sprintf("%.2f / %.2f", t.P50/r.P50, t.P99/r.P99), Target: "—", Result: "info"})
	}
	lat("ADD (allocate)", tb.cp.Add, wb.cp.Add)
	lat("DEL (release)", tb.cp.Del, wb.cp.Del)
	rep.add(info(row{Section: sec, What: "API requests per ADD (apiserver_request_total by verb and resource)",
		TB: tb.addReqs.String(), Ref: ref + wb.addReqs.String()}, tb.addReqs.total()/wb.addReqs.total()))
	rep.add(info(row{Section: sec, What: "API requests per DEL", TB: tb.delReqs.String(), Ref: ref + wb.delReqs.String()},
		tb.delReqs.total()/wb.delReqs.total()))
	rep.add(info(row{Section: sec, What: "kube-apiserver + etcd CPU ms per call, ADD / DEL",
		TB: fmt.Sprintf("%.2f / %.2f", tb.addSrv, tb.delSrv), Ref: ref + fmt.Sprintf("%.2f / %.2f", wb.addSrv, wb.delSrv)}, tb.addSrv/wb.addSrv))
	rep.add(info(row{Section: sec, What: "IPAM CPU ms per call p50, ADD / DEL (user+sys of the exec)",
		TB: fmt.Sprintf("%.1f / %.1f", tb.cp.AddCPU, tb.cp.DelCPU), Ref: ref + fmt.Sprintf("%.1f / %.1f", wb.cp.AddCPU, wb.cp.DelCPU)}, tb.cp.AddCPU/wb.cp.AddCPU))
	rates := info(row{Section: sec, What: "calls/s ADD / DEL",
		TB: fmt.Sprintf("%.0f / %.0f", tb.cp.AddRate, tb.cp.DelRate), Ref: ref + fmt.Sprintf("%.0f / %.0f", wb.cp.AddRate, wb.cp.DelRate)}, 0)
	rates.Ratio = fmt.Sprintf("%.2f / %.2f", tb.cp.AddRate/wb.cp.AddRate, tb.cp.DelRate/wb.cp.DelRate)
	rep.add(rates)
}

func clusterNote(n, runs, k int, idle float64) string {
	return fmt.Sprintf("Cluster IPAM: tapbridge-ipam (this tree) and whereabouts %s (built from its module by scripts/deps/whereabouts.sh) exec'd directly as CNI IPAM plugins "+
		"(CNI_COMMAND ADD/DEL, CNI_ARGS with K8S_POD_NAMESPACE/NAME/UID as Multus passes them, config on stdin) from one simulated node joined to a real kube-apiserver %s and etcd "+
		"started for the section on this machine (so the server's CPU competes with the IPAMs'). Both get the same range (%s), a network each, the admin kubeconfig (client certificate; whereabouts reads it from the node-wide flat file its installer writes, which it requires) "+
		"and otherwise their defaults (whereabouts: overlapping-range reservations on, leader election on a Lease with 1.5 s / 1 s / 0.5 s, debug log to stderr; tapbridge-ipam: its defaults but a 30 s call timeout, set by the bench, the default being 10 s). "+
		"Each batch ADDs %d attachments of %d pending pods (created beforehand, the same pods for both) with K workers, checks the %d addresses are distinct, DELs them with the ADD result as prevResult (as libcni does) "+
		"and checks that nothing is left (no IPAllocation; an empty IPPool and no reservation); %d runs per K, the two IPAMs alternating batch by batch, the order flipping each run, after one warm-up ADD/DEL each "+
		"(whereabouts creates its IPPool on first use). Latency: medians over runs of each batch's p50/p99. Requests per call: apiserver_request_total summed by verb and resource, scraped before and after the batch's ADDs and around its DELs, divided by N, "+
		"mean over runs; with no IPAM running the server counted %.2f requests/s of its own (leases, endpoints), which are in these counts, not subtracted (their share per call is that rate × the batch's duration / N: about %.3f per 100 ms of batch time per call). "+
		"Server CPU: utime+stime of kube-apiserver and etcd over the same windows, per call (10 ms ticks); the header's share of other processes' CPU for this section includes them. K=%d runs %d calls at once from one node.",
		whereaboutsVersion, kube.Version, clusterRange, n, n, n, runs, idle, idle*0.1, k, k)
}
