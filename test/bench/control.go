package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// batch is N pods ADDed, then DELed, by K workers.
type batch struct {
	Bin   string
	Tag   string // makes container IDs unique across batches
	Conf  func(i int) []byte
	Args  func(i int) string // CNI_ARGS of pod i (nil: none)
	Pods  []harness.Netns
	K     int
	Order func(i int) int // DEL order (nil: the ADD order)
	Node  *harness.Netns  // where the calls run (nil: the control-plane node)
	// Between, if set, runs after the last ADD and before the first DEL,
	// with every pod of the batch attached; it gets the ADD results, in
	// pod order.
	Between func(added [][]byte) error
}

type batchResult struct {
	Add, Del         []time.Duration // per pod, in ADD/DEL order
	AddCPU, DelCPU   []time.Duration
	AddFaults        []int64 // page faults per ADD; nil where not measured
	AddWall, DelWall time.Duration
}

func (r batchResult) addRate() float64 { return float64(len(r.Add)) / r.AddWall.Seconds() }
func (r batchResult) delRate() float64 { return float64(len(r.Del)) / r.DelWall.Seconds() }

func (b *bench) runBatch(ctx context.Context, s batch) (batchResult, error) {
	n := len(s.Pods)
	out := batchResult{Add: make([]time.Duration, n), Del: make([]time.Duration, n),
		AddCPU: make([]time.Duration, n), DelCPU: make([]time.Duration, n), AddFaults: make([]int64, n)}
	results := make([][]byte, n)
	call := func(i int, cmd string, stdin []byte) pluginCall {
		c := pluginCall{Bin: s.Bin, Command: cmd, ContainerID: fmt.Sprintf("%s-%04d", s.Tag, i),
			Netns: s.Pods[i].Path(), IfName: podIfName, Path: b.cniPath(), Stdin: stdin}
		if s.Args != nil {
			c.Args = s.Args(i)
		}
		return c
	}
	node := b.node
	if s.Node != nil {
		node = *s.Node
	}
	var err error
	out.AddWall, err = b.parallelIn(ctx, node, s.K, n, func(i int) error {
		r, err := call(i, "ADD", s.Conf(i)).run(ctx)
		out.Add[i], out.AddCPU[i], out.AddFaults[i], results[i] = r.Dur, r.CPU, r.Faults, r.Stdout
		return err
	})
	if err != nil {
		return out, err
	}
	if s.Between != nil {
		if err := s.Between(results); err != nil {
			return out, err
		}
	}
	out.DelWall, err = b.parallelIn(ctx, node, s.K, n, func(j int) error {
		i := j
		if s.Order != nil {
			i = s.Order(j)
		}
		r, err := call(i, "DEL", withPrevResult(s.Conf(i), results[i])).run(ctx)
		out.Del[j], out.DelCPU[j] = r.Dur, r.CPU
		return err
	})
	return out, err
}

// parallel runs fn(0..n-1) on k workers, each a thread inside the node
// netns from which it execs (harness.Netns.Do), and returns the wall time.
func (b *bench) parallel(ctx context.Context, k, n int, fn func(i int) error) (time.Duration, error) {
	return b.parallelIn(ctx, b.node, k, n, fn)
}

// parallelIn is parallel from another node netns.
func (b *bench) parallelIn(ctx context.Context, node harness.Netns, k, n int, fn func(i int) error) (time.Duration, error) {
	var next atomic.Int64
	errc := make(chan error, k)
	t0 := time.Now()
	for range k {
		go func() {
			errc <- inNS(node, func() error {
				for {
					i := int(next.Add(1) - 1)
					if i >= n {
						return nil
					}
					if err := ctx.Err(); err != nil {
						return err
					}
					if err := fn(i); err != nil {
						next.Store(int64(n)) // stop the other workers
						return err
					}
				}
			})
		}()
	}
	var first error
	for range k {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return time.Since(t0), first
}

// cpVariant is one plugin configuration of the control-plane rows.
type cpVariant struct {
	Key   string
	Label string
	Bin   string
	Conf  func(ipamDir string) []byte
	Plain bool // a binary that is no CNI plugin: exec it N times, no DEL
}

// hostLocalRangeEnd is the last address of the control-plane rows' range.
const hostLocalRangeEnd = "10.88.250.254"

func (b *bench) cpVariants() (tb, noSpoof, br cpVariant) {
	ipam := func(dir string) map[string]any { return hostLocal(dir, "10.88.0.0/16", "10.88.1.1", hostLocalRangeEnd) }
	tbConf := func(spoof bool) func(string) []byte {
		return func(dir string) []byte {
			return tapbridgeConf(tbOpts{DataDir: filepath.Join(b.dir, "state-cp"), Node: nodeName,
				HostAddr: "10.88.0.250/16", Spoof: spoof, IPAM: ipam(dir)})
		}
	}
	tb = cpVariant{Key: "tb", Label: "tapbridge", Bin: b.tapbridge, Conf: tbConf(true)}
	noSpoof = cpVariant{Key: "tb-nospoof", Label: `tapbridge "spoofCheck": false`, Bin: b.tapbridge, Conf: tbConf(false)}
	br = cpVariant{Key: "bridge", Label: "bridge v1.9.1", Bin: b.upstream("bridge"),
		Conf: func(dir string) []byte { return bridgeConf(ipam(dir)) }}
	return
}

// cpResults holds every batch by variant key and K.
type cpResults map[string]map[int][]batchResult

// controlPlane alternates the plugins run by run (the order flips each
// run, so neither always runs first), sequentially and with K workers.
func (b *bench) controlPlane(ctx context.Context) (cpResults, error) {
	if err := b.ensurePods(b.opts.N); err != nil {
		return nil, err
	}
	tb, noSpoof, br := b.cpVariants()
	res := cpResults{}
	for _, k := range []int{1, b.opts.K} {
		for r := range b.opts.Runs {
			order := []cpVariant{tb, br}
			if k == 1 {
				// The floor's exec and IPAM parts run alternated with
				// the plugins, so they see the same machine.
				order = []cpVariant{tb, noSpoof, br, b.ipamVariant(), b.trivialVariant(), b.skelVariant()}
			}
			if b.opts.Alt != "" {
				alt := tb
				alt.Key, alt.Label, alt.Bin = "tb-alt", "tapbridge (-alt build)", b.alt
				order = append([]cpVariant{alt}, order...)
			}
			if r%2 == 1 {
				order = reversed(order)
			}
			for _, v := range order {
				got, err := b.cpBatch(ctx, v, k, r)
				if err != nil {
					return nil, err
				}
				if res[v.Key] == nil {
					res[v.Key] = map[int][]batchResult{}
				}
				res[v.Key][k] = append(res[v.Key][k], got)
			}
		}
	}
	return res, nil
}

// ipamVariant is host-local alone with tapbridge's config, as tapbridge
// execs it; trivialVariant is the exec floor.
func (b *bench) ipamVariant() cpVariant {
	tb, _, _ := b.cpVariants()
	return cpVariant{Key: "host-local", Label: "host-local alone", Bin: b.upstream("host-local"), Conf: tb.Conf}
}

func (b *bench) trivialVariant() cpVariant {
	return cpVariant{Key: "trivial", Label: "trivial static Go binary", Bin: b.trivial, Plain: true}
}

// skelVariant is the least a Go CNI plugin on skel that delegates IPAM
// does (see skelfloor), exec'd with tapbridge's config (host-local) as a
// plugin.
func (b *bench) skelVariant() cpVariant {
	tb, _, _ := b.cpVariants()
	return cpVariant{Key: "skel", Label: "minimal Go CNI plugin on skel, delegating IPAM", Bin: b.skelFloor, Conf: tb.Conf}
}

// plainBatch execs a binary N times from the node netns.
func (b *bench) plainBatch(ctx context.Context, bin string) (batchResult, error) {
	n := b.opts.N
	r := batchResult{Add: make([]time.Duration, n), AddCPU: make([]time.Duration, n)}
	var err error
	r.AddWall, err = b.parallel(ctx, 1, n, func(i int) (err error) {
		r.Add[i], r.AddCPU[i], _, err = execTimed(ctx, bin)
		return err
	})
	r.Del, r.DelCPU, r.DelWall = r.Add, r.AddCPU, r.AddWall
	return r, err
}

func (b *bench) cpBatch(ctx context.Context, v cpVariant, k, run int) (batchResult, error) {
	if v.Plain {
		b.waitQuiet(ctx)
		r, err := b.plainBatch(ctx, v.Bin)
		logf("control plane %-10s K=%d run %d: exec p50 %.2f ms (CPU %.2f)", v.Key, k, run+1,
			ms(percentile(r.Add, 50)), ms(percentile(r.AddCPU, 50)))
		return r, err
	}
	tag := fmt.Sprintf("k%d-r%d-%s", k, run, v.Key)
	ipamDir := filepath.Join(b.dir, "ipam", tag)
	conf := v.Conf(ipamDir)
	b.waitQuiet(ctx)
	r, err := b.runBatch(ctx, batch{Bin: v.Bin, Tag: b.id + "-" + tag, Conf: func(int) []byte { return conf },
		Pods: b.pods[:b.opts.N], K: k})
	if err != nil {
		return r, fmt.Errorf("control plane %s: %w", tag, err)
	}
	logf("control plane %-10s K=%d run %d: ADD p50 %.2f ms (CPU %.2f), DEL p50 %.2f ms (CPU %.2f), ADD %.0f pods/s, DEL %.0f pods/s",
		v.Key, k, run+1, ms(percentile(r.Add, 50)), ms(percentile(r.AddCPU, 50)), ms(percentile(r.Del, 50)),
		ms(percentile(r.DelCPU, 50)), r.addRate(), r.delRate())
	return r, os.RemoveAll(ipamDir)
}

func reversed[T any](s []T) []T {
	out := make([]T, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

// cpSummary is one control-plane row: medians over runs.
type cpSummary struct {
	Add, Del         quantiles
	AddRate, DelRate float64
	AddCPU, DelCPU   float64 // p50 ms
	AddFaults        float64 // p50 page faults per ADD (0: not measured)
}

func summarize(runs []batchResult) cpSummary {
	var add, del []quantiles
	var ar, dr, ac, dc, af []float64
	for _, r := range runs {
		add, del = append(add, quantilesOf(r.Add)), append(del, quantilesOf(r.Del))
		ar, dr = append(ar, r.addRate()), append(dr, r.delRate())
		ac, dc = append(ac, ms(percentile(r.AddCPU, 50))), append(dc, ms(percentile(r.DelCPU, 50)))
		if len(r.AddFaults) > 0 {
			af = append(af, medianInt(r.AddFaults))
		}
	}
	return cpSummary{medianQuantiles(add), medianQuantiles(del), median(ar), median(dr), median(ac), median(dc), median(af)}
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}
