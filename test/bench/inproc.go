package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/tapbridge/tapbridge-cni/internal/config"
	"github.com/tapbridge/tapbridge-cni/internal/plugin"
)

// stepClock is a slog handler that turns the plugin's "step done" records
// into step durations: the plugin logs after each step, so the time
// between two records is the step in between.
type stepClock struct {
	last  time.Time
	steps *stepTimes
}

func (h *stepClock) Enabled(context.Context, slog.Level) bool { return true }

func (h *stepClock) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "step done" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "step" {
			h.steps.add(a.Value.String(), r.Time.Sub(h.last))
			return false
		}
		return true
	})
	h.last = r.Time
	return nil
}

func (h *stepClock) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *stepClock) WithGroup(string) slog.Handler      { return h }

type inprocResult struct {
	add      *stepTimes // per step, plus "prepare" and "total"
	del      *stepTimes // "total"
	parseAdd *stepTimes
}

// inProcess runs the plugin's ADD and DEL in this process, on a thread
// in the node netns, with the control-plane config: the same code as the
// binary without process start-up, config parsing aside.
func (b *bench) inProcess(ctx context.Context) (*inprocResult, error) {
	res := &inprocResult{add: newStepTimes(), del: newStepTimes(), parseAdd: newStepTimes()}
	tb, _, _ := b.cpVariants()
	conf := tb.Conf(filepath.Join(b.dir, "ipam", "floor-inproc"))
	n := b.floorN()
	cid := func(i int) string { return fmt.Sprintf("%s-inproc-%04d", b.id, i) }
	load := func(i int, clock *stepClock) (*plugin.Plugin, error) {
		var net *config.Net
		err := res.parseAdd.timed("parse", func() (err error) {
			net, err = config.Parse(conf, config.Env{ContainerID: cid(i), IfName: podIfName, Hostname: nodeName})
			return err
		})
		return &plugin.Plugin{Net: net, Log: slog.New(clock),
			Env: plugin.Env{ContainerID: cid(i), Netns: b.pods[i].Path(), IfName: podIfName, Path: b.cniPath()}}, err
	}
	b.waitQuiet(ctx)
	err := inNS(b.node, func() error {
		for i := range n {
			clock := &stepClock{steps: res.add}
			p, err := load(i, clock)
			if err != nil {
				return err
			}
			t0 := time.Now()
			clock.last = t0
			if _, err := p.Add(ctx); err != nil {
				return fmt.Errorf("in-process ADD: %w", err)
			}
			res.add.add("total", time.Since(t0))
		}
		for i := range n {
			p, err := load(i, &stepClock{steps: newStepTimes()})
			if err != nil {
				return err
			}
			if err := res.del.timed("total", func() error { return p.Del(ctx) }); err != nil {
				return fmt.Errorf("in-process DEL: %w", err)
			}
		}
		return nil
	})
	return res, err
}
