// Command bench is the benchmark of issue 5: tapbridge-cni's control plane
// against the upstream bridge plugin, its scaling, its floor, its memory,
// and the data path it builds. Run it as root from the module root:
//
//	go run ./test/bench -out bench-results.md
//
// Everything happens in network namespaces it creates (named tbb-<8 hex>-…)
// and removes at the end, also on error or on SIGINT/SIGTERM; nothing is
// added to, or sent from, the machine's root network namespace.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

type options struct {
	Out          string
	N            int // pods per control-plane batch
	Runs         int
	K            int
	ScaleN       int
	Window       int // first/last ADDs compared in the scale rows
	DPTime       time.Duration
	LatSamples   int
	Quick        bool
	Plugin       string // a prebuilt tapbridge-cni, e.g. bin/tapbridge-cni
	Only         string // comma-separated sections, for investigating one
	Layouts      string // comma-separated data-plane layouts (default: all)
	Alt          string // a second tapbridge-cni build measured alongside
	Dir          string // where the state, IPAM and build dirs go
	Agent        string // a prebuilt tapbridge-agent (default: beside -plugin)
	IPAM         string // a prebuilt tapbridge-ipam (default: beside -plugin)
	ClusterK     int    // concurrent calls in the concurrent cluster-ipam rows
	AgentN       int
	AgentSamples int
	AgentIdle    time.Duration
}

func parseFlags() options {
	var o options
	flag.StringVar(&o.Out, "out", "", "also write the report to this file")
	flag.IntVar(&o.N, "n", 200, "pods per control-plane batch")
	flag.IntVar(&o.Runs, "runs", 3, "control-plane runs per plugin (medians are reported)")
	flag.IntVar(&o.K, "k", 8, "concurrent calls in the concurrent control-plane rows")
	flag.IntVar(&o.ScaleN, "scale", 1000, "sequential ADDs in the scale rows")
	flag.IntVar(&o.Window, "window", 100, "first/last ADDs and DELs compared in the scale rows")
	flag.DurationVar(&o.DPTime, "dp-time", 2*time.Second, "data-plane measurement per frame size and layout")
	flag.IntVar(&o.LatSamples, "lat-samples", 2000, "paced small frames for the latency figures")
	flag.BoolVar(&o.Quick, "quick", false, "smoke test: small sizes, one run")
	flag.StringVar(&o.Plugin, "plugin", "", "tapbridge-cni binary to use (default: build one)")
	flag.StringVar(&o.Only, "only", "", "run only these sections (control,floor,memory,scale,agent,dataplane,cluster-ipam)")
	flag.StringVar(&o.Agent, "agent", "", "tapbridge-agent binary to use (default: the one beside -plugin, else build one)")
	flag.StringVar(&o.IPAM, "ipam", "", "tapbridge-ipam binary to use (default: the one beside -plugin, else build one)")
	flag.IntVar(&o.ClusterK, "cluster-k", 16, "concurrent calls in the concurrent cluster-ipam rows")
	flag.IntVar(&o.AgentN, "agent-n", 1000, "served attachments in the agent rows")
	flag.IntVar(&o.AgentSamples, "agent-samples", 200, "DHCP request pairs per agent latency figure")
	flag.DurationVar(&o.AgentIdle, "agent-idle", 10*time.Second, "how long the agent's idle CPU is measured")
	flag.StringVar(&o.Dir, "dir", os.TempDir(), "base dir for the run's state, IPAM and binaries (its filesystem matters: see the header)")
	flag.StringVar(&o.Alt, "alt", "", "a second tapbridge-cni build (e.g. with a fix) run alternately in the control-plane rows, and as data-plane layout tb-alt")
	flag.StringVar(&o.Layouts, "layouts", "", "data-plane layouts to run, for profiling one (tb,tb-nospoof,tb-hook,direct,inpod,vethfloor; tb-alt with -alt); rows need all")
	flag.Parse()
	if o.Quick {
		o.N, o.Runs, o.ScaleN, o.Window = 20, 1, 100, 20
		o.DPTime, o.LatSamples = 300*time.Millisecond, 200
		o.AgentN, o.AgentSamples, o.AgentIdle = 100, 40, 2*time.Second
	}
	return o
}

func main() {
	opts := parseFlags()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (network namespaces, netlink, /dev/net/tun)")
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg := newRegistry()
	handleSignals(cancel, reg)
	code := 0
	if err := run(ctx, opts, reg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		code = 1
		if ctx.Err() != nil {
			code = 130 // interrupted: the signal handler cancelled the run
		}
	}
	if err := reg.cleanup(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: cleanup:", err)
		code = 1
	}
	cancel()
	os.Exit(code)
}

func run(ctx context.Context, opts options, reg *registry) error {
	start := time.Now()
	b, err := setUp(opts, reg)
	if err != nil {
		return err
	}
	rep := &report{}
	rep.env = b.environment()
	for _, s := range b.sections() {
		if !opts.wants(s.name) {
			continue
		}
		logf("section %s", s.name)
		before := sampleCPU()
		if err := s.run(ctx, rep); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		rep.load = append(rep.load, fmt.Sprintf("%s %.0f%%", s.name, 100*foreignLoad(before, sampleCPU())))
	}
	rep.definitions()
	rep.designNotes()
	return rep.emit(b, time.Since(start))
}

// setUp builds the binaries and the control-plane node.
func setUp(opts options, reg *registry) (*bench, error) {
	b := &bench{opts: opts, reg: reg, id: harness.RunID("tbb"), cniBin: harness.CNIBinDir()}
	var err error
	if b.dir, err = reg.tempDir(opts.Dir, b.id+"-"); err != nil {
		return nil, err
	}
	logf("run %s: building plugins and helpers in %s", b.id, b.dir)
	if err := harness.EnsureUpstream(); err != nil {
		return nil, err
	}
	if b.tapbridge = opts.Plugin; b.tapbridge == "" {
		if b.tapbridge, err = harness.BuildPlugin(filepath.Join(b.dir, "bin"), ""); err != nil {
			return nil, err
		}
	} else if b.tapbridge, err = filepath.Abs(b.tapbridge); err != nil {
		return nil, err
	}
	if opts.Alt != "" {
		if b.alt, err = filepath.Abs(opts.Alt); err != nil {
			return nil, err
		}
	}
	if b.trivial, err = buildHelper(b.dir, "trivial", trivialSrc); err != nil {
		return nil, err
	}
	if b.launcher, err = buildHelper(b.dir, "launcher", launcherSrc); err != nil {
		return nil, err
	}
	if b.skelFloor, err = buildRepoHelper(b.dir, "skelfloor", "./test/bench/skelfloor"); err != nil {
		return nil, err
	}
	b.node, err = b.newNode("node", net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0xbe, 0x01})
	return b, err
}
