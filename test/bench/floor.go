package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/internal/attachment"
	"github.com/tapbridge/tapbridge-cni/internal/bridge"
	"github.com/tapbridge/tapbridge-cni/internal/ipam"
	"github.com/tapbridge/tapbridge-cni/internal/link"
	"github.com/tapbridge/tapbridge-cni/internal/redirect"
	"github.com/tapbridge/tapbridge-cni/internal/spoof"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// stepTimes collects durations per named step, in first-seen order.
type stepTimes struct {
	order []string
	by    map[string][]time.Duration
}

func newStepTimes() *stepTimes { return &stepTimes{by: map[string][]time.Duration{}} }

func (s *stepTimes) add(name string, d time.Duration) {
	if _, ok := s.by[name]; !ok {
		s.order = append(s.order, name)
	}
	s.by[name] = append(s.by[name], d)
}

// timed runs fn and records its duration under name.
func (s *stepTimes) timed(name string, fn func() error) error {
	t0 := time.Now()
	err := fn()
	s.add(name, time.Since(t0))
	return err
}

func (s *stepTimes) p50(name string) time.Duration { return percentile(s.by[name], 50) }

// breakdown is "name p50, name p50, ..." in ms.
func (s *stepTimes) breakdown() string {
	out := ""
	for i, name := range s.order {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf("%s %.2f", name, ms(s.p50(name)))
	}
	return out
}

// kernelSteps does, in this process, the kernel work one attachment needs
// (what ADD does minus process start, config, state files and IPAM), the
// same calls in the same netns as the plugin, and then undoes it.
type kernelSteps struct {
	spoof bool
	add   *stepTimes
	del   *stepTimes
	cpu   []time.Duration // of the calling thread per attach, kernel work included
}

// step is one named piece of kernel work.
type step struct {
	name string
	fn   func() error
}

func (k *kernelSteps) attach(podPath, cid string, ip netip.Addr) error {
	pod, err := ns.GetNS(podPath)
	if err != nil {
		return err
	}
	defer pod.Close()
	var podCPU time.Duration // of the threads ns.Do runs the pod-side steps on
	t0, cpu0 := time.Now(), threadCPU()
	for _, s := range k.attachSteps(pod, cid, ip, &podCPU) {
		if err := k.add.timed(s.name, s.fn); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	k.add.add("total", time.Since(t0))
	k.cpu = append(k.cpu, threadCPU()-cpu0+podCPU)
	return nil
}

// attachSteps are the plugin's ADD calls in the plugin's order; the CPU
// time of the pod-side ones, which ns.Do runs on another thread, is added
// to *podCPU.
func (k *kernelSteps) attachSteps(pod ns.NetNS, cid string, ip netip.Addr, podCPU *time.Duration) []step {
	names := attachment.For(attachment.ID{ContainerID: cid, IfName: podIfName})
	guest := attachment.GuestMAC(names.GuestID)
	var br *bridge.Bridge
	spec := link.Tap{Name: names.Tap, Owner: 107, Group: 107, MAC: attachment.TapMAC(guest), LinkGroup: names.Group}
	inPod := func(fn func() error) error {
		return pod.Do(func(ns.NetNS) error {
			c0 := threadCPU()
			defer func() { *podCPU += threadCPU() - c0 }()
			return fn()
		})
	}
	steps := []step{
		{"bridge lookup", func() (err error) { br, err = bridge.Lookup(bridgeName); return err }},
		{"veth", func() error {
			spec.MTU = br.MTU
			return link.CreateVeth(link.Veth{HostName: names.HostIf, HostMAC: names.HostMAC, BridgeIndex: br.Index,
				PodName: names.PodIf, PodMAC: guest, PodNSFd: int(pod.Fd()), PodGroup: names.Group, MTU: br.MTU})
		}},
		{"pod", func() error {
			return inPod(func() error {
				if err := link.CreateTap(spec); err != nil {
					return err
				}
				if err := redirect.Add(names.PodIf, names.Tap); err != nil {
					return err
				}
				return link.UpWithoutIPv6(names.PodIf, names.Tap)
			})
		}},
		{"up", func() error {
			if err := link.NoAddrGen(names.HostIf); err != nil {
				return err
			}
			return link.Up(names.HostIf)
		}},
		{"bridge addrs", func() error { _, err := br.Addrs(unix.AF_INET); return err }},
	}
	if !k.spoof {
		return steps
	}
	return append(steps, step{"nft", func() error {
		return spoof.Ensure(spoof.Port{Name: names.HostIf, MAC: guest, IPs: []netip.Addr{ip}})
	}})
}

// detach removes the links as the plugin's DEL does: the anti-spoof
// table's removal is committed first and its socket closed after the links
// are gone, so the kernel's two grace periods overlap.
func (k *kernelSteps) detach(podPath, cid string) error {
	names := attachment.For(attachment.ID{ContainerID: cid, IfName: podIfName})
	t0 := time.Now()
	finish := func() {}
	var err error
	if k.spoof {
		err = k.del.timed("nft commit", func() (err error) { finish, err = spoof.BeginDelete(names.HostIf); return err })
	}
	if err == nil {
		err = k.del.timed("links", func() error {
			pod, err := ns.GetNS(podPath)
			if err != nil {
				return err
			}
			defer pod.Close()
			if err := pod.Do(func(ns.NetNS) error { return link.DeleteGroup(names.Group) }); err != nil {
				return err
			}
			return link.DeleteVeth(names.HostIf, names.IsHostMAC)
		})
	}
	if k.spoof {
		_ = k.del.timed("nft close", func() error { finish(); return nil })
	}
	k.del.add("total", time.Since(t0))
	return err
}

// crowd is how many other leases the crowded host-local rows' store holds.
const crowd = 1000

// floorData is what the floor rows are computed from.
type floorData struct {
	trivial, trivialCPU time.Duration
	faultCost           time.Duration // first touch of an anonymous page
	// the plugin exec'd for VERSION (Go runtime start, package inits, skel,
	// no ADD work), and the trivial exec alternated with it
	version, versionTrivial             time.Duration
	versionFaults, versionTrivialFaults float64
	skel, skelCPU                       time.Duration // ADD of the minimal skel plugin, its host-local ADD included
	ipamAdd, ipamDel                    time.Duration // host-local's exec, as bridge runs it
	ipamAddCPU                          time.Duration
	inAdd, inDel                        time.Duration // host-local in process, as tapbridge runs it
	inAddCPU                            time.Duration
	// in-process host-local with crowd other leases in its store, called
	// as the plugin calls it, and the binary's way
	crowdHinted, crowdWalking batchResult
	steps, noSpoof            *kernelSteps
	inproc                    *inprocResult
}

func (b *bench) measureFloor(ctx context.Context) (*floorData, error) {
	if err := b.ensurePods(b.opts.N); err != nil {
		return nil, err
	}
	f := &floorData{}
	var err error
	if runs := b.cp["trivial"][1]; len(runs) > 0 { // measured alongside the plugins
		s := summarize(runs)
		f.trivial, f.trivialCPU = fromMS(s.Add.P50), fromMS(s.AddCPU)
	} else if f.trivial, f.trivialCPU, err = b.execFloor(ctx); err != nil {
		return nil, err
	}
	skelRuns := b.cp["skel"][1]
	if len(skelRuns) == 0 { // the control section did not run: measure it alone
		r, err := b.cpBatch(ctx, b.skelVariant(), 1, 0)
		if err != nil {
			return nil, err
		}
		skelRuns = []batchResult{r}
	}
	s := summarize(skelRuns)
	f.skel, f.skelCPU = fromMS(s.Add.P50), fromMS(s.AddCPU)
	if runs := b.cp["host-local"][1]; len(runs) > 0 {
		s := summarize(runs)
		f.ipamAdd, f.ipamDel, f.ipamAddCPU = fromMS(s.Add.P50), fromMS(s.Del.P50), fromMS(s.AddCPU)
	} else if f.ipamAdd, f.ipamDel, f.ipamAddCPU, err = b.hostLocalAlone(ctx); err != nil {
		return nil, err
	}
	if f.inAdd, f.inDel, f.inAddCPU, err = b.hostLocalInProcess(ctx); err != nil {
		return nil, err
	}
	if f.crowdHinted, f.crowdWalking, err = b.hostLocalCrowded(ctx, crowd); err != nil {
		return nil, err
	}
	for _, spoofOn := range []bool{true, false} {
		ks := &kernelSteps{spoof: spoofOn, add: newStepTimes(), del: newStepTimes()}
		if err := b.runKernelSteps(ctx, ks); err != nil {
			return nil, err
		}
		if spoofOn {
			f.steps = ks
		} else {
			f.noSpoof = ks
		}
	}
	if f.faultCost, err = pageFaultCost(); err != nil {
		return nil, err
	}
	if err := b.versionExec(ctx, f); err != nil {
		return nil, err
	}
	f.inproc, err = b.inProcess(ctx)
	return f, err
}

// floorN is the sample count of the floor measurements: enough for a
// stable p50, and it keeps the run short.
func (b *bench) floorN() int { return min(b.opts.N, 100) }

func (b *bench) execFloor(ctx context.Context) (wall, cpu time.Duration, err error) {
	n := b.floorN()
	w, c := make([]time.Duration, n), make([]time.Duration, n)
	_, err = b.parallel(ctx, 1, n, func(i int) error {
		var err error
		w[i], c[i], _, err = execTimed(ctx, b.trivial)
		return err
	})
	return percentile(w, 50), percentile(c, 50), err
}

// versionExec execs the plugin for VERSION and the trivial binary in turn:
// what the plugin's binary costs before it does any work of its own.
func (b *bench) versionExec(ctx context.Context, f *floorData) error {
	n := b.floorN()
	vw, tw := make([]time.Duration, n), make([]time.Duration, n)
	vf, tf := make([]int64, n), make([]int64, n)
	_, err := b.parallel(ctx, 1, n, func(i int) error {
		r, err := pluginCall{Bin: b.tapbridge, Command: "VERSION", Stdin: []byte(`{"cniVersion":"1.0.0"}`)}.run(ctx)
		if err != nil {
			return err
		}
		vw[i], vf[i] = r.Dur, r.Faults
		tw[i], _, tf[i], err = execTimed(ctx, b.trivial)
		return err
	})
	f.version, f.versionTrivial = percentile(vw, 50), percentile(tw, 50)
	f.versionFaults, f.versionTrivialFaults = medianInt(vf), medianInt(tf)
	return err
}

// hostLocalAlone execs host-local itself with tapbridge's config, as
// bridge does (tapbridge runs it in process): ADDs, then DELs.
func (b *bench) hostLocalAlone(ctx context.Context) (add, del, addCPU time.Duration, err error) {
	tb, _, _ := b.cpVariants()
	conf := tb.Conf(filepath.Join(b.dir, "ipam", "floor-host-local"))
	b.waitQuiet(ctx)
	r, err := b.runBatch(ctx, batch{Bin: b.upstream("host-local"), Tag: b.id + "-floor-hl",
		Conf: func(int) []byte { return conf }, Pods: b.pods[:b.floorN()], K: 1})
	return percentile(r.Add, 50), percentile(r.Del, 50), percentile(r.AddCPU, 50), err
}

// hostLocalInProcess runs host-local's ADDs, then its DELs, in this
// process with tapbridge's config, through the package tapbridge calls
// (internal/ipam) and as the plugin calls it (a fresh claim on ADD, the
// lease on DEL): what the plugin's IPAM costs it now that host-local no
// longer runs as a process of its own. CPU is the calling thread's: the
// in-process IPAM runs on the caller's goroutine, which inNS locks to it.
func (b *bench) hostLocalInProcess(ctx context.Context) (add, del, addCPU time.Duration, err error) {
	tb, _, _ := b.cpVariants()
	r, err := b.hostLocalCalls(ctx, tb.Conf(filepath.Join(b.dir, "ipam", "floor-host-local-inproc")), "hl-inproc", b.floorN(), true)
	return percentile(r.Add, 50), percentile(r.Del, 50), percentile(r.AddCPU, 50), err
}

// hostLocalCalls makes n in-process host-local ADDs, then their DELs,
// told what tapbridge tells it (hinted) or not (the binary's way: each
// call reads every lease of the store).
func (b *bench) hostLocalCalls(ctx context.Context, conf []byte, tag string, n int, hinted bool) (batchResult, error) {
	p := ipam.Plugin{Type: "host-local", Config: conf, Path: b.cniPath(), Timeout: time.Minute}
	if !p.InProcess() {
		return batchResult{}, fmt.Errorf("host-local does not run in process")
	}
	r := batchResult{Add: make([]time.Duration, n), Del: make([]time.Duration, n), AddCPU: make([]time.Duration, n)}
	leases := make([][]netip.Addr, n)
	call := func(i int) ipam.Call {
		return ipam.Call{ContainerID: fmt.Sprintf("%s-%s-%04d", b.id, tag, i), IfName: podIfName, Netns: b.pods[i%len(b.pods)].Path()}
	}
	b.waitQuiet(ctx)
	err := inNS(b.node, func() error {
		for i := range n {
			c := call(i)
			c.Fresh = hinted
			t0, c0 := time.Now(), threadCPU()
			res, err := p.Add(ctx, c)
			if err != nil {
				return fmt.Errorf("in-process host-local ADD: %w", err)
			}
			r.Add[i], r.AddCPU[i] = time.Since(t0), threadCPU()-c0
			for _, ip := range res.IPs {
				a, _ := netip.AddrFromSlice(ip.Address.IP)
				leases[i] = append(leases[i], a.Unmap())
			}
		}
		for i := range n {
			c := call(i)
			if hinted {
				c.Leased = leases[i]
			}
			t0 := time.Now()
			if err := p.Del(ctx, c); err != nil {
				return fmt.Errorf("in-process host-local DEL: %w", err)
			}
			r.Del[i] = time.Since(t0)
		}
		return nil
	})
	return r, err
}

// hostLocalCrowded measures the in-process host-local ADD and DEL in a
// store that already holds others leases (written as upstream's store
// writes them), hinted as the plugin calls it and unhinted: the per-call
// cost that DESIGN.md says must not grow with the node's attachments.
func (b *bench) hostLocalCrowded(ctx context.Context, others int) (hinted, walking batchResult, err error) {
	tb, _, _ := b.cpVariants()
	dir := filepath.Join(b.dir, "ipam", "floor-host-local-crowded")
	conf := tb.Conf(dir)
	store := filepath.Join(dir, netName)
	if err := os.MkdirAll(store, 0o755); err != nil {
		return hinted, walking, err
	}
	// Leases from the top of the range down, where the calls' round robin
	// (from the range's start) does not reach.
	top := netip.MustParseAddr(hostLocalRangeEnd)
	for i := range others {
		owner := fmt.Sprintf("%s-crowd-%04d\r\n%s", b.id, i, podIfName)
		if err := os.WriteFile(filepath.Join(store, top.String()), []byte(owner), 0o644); err != nil {
			return hinted, walking, err
		}
		top = top.Prev()
	}
	n := min(b.floorN(), 50)
	if hinted, err = b.hostLocalCalls(ctx, conf, "hl-crowd-hinted", n, true); err != nil {
		return hinted, walking, err
	}
	walking, err = b.hostLocalCalls(ctx, conf, "hl-crowd-walk", n, false)
	return hinted, walking, err
}

func (b *bench) runKernelSteps(ctx context.Context, ks *kernelSteps) error {
	b.waitQuiet(ctx)
	return b.runKernelStepsOn(ctx, ks, b.pods[:b.floorN()], "floor", false)
}

// runKernelStepsOn attaches each of pods in turn in the control-plane
// node, then detaches them all, or with oneAtATime each right after its
// attach (a bridge takes at most 1023 ports); tag keeps the container IDs
// unique.
func (b *bench) runKernelStepsOn(ctx context.Context, ks *kernelSteps, pods []harness.Netns, tag string, oneAtATime bool) error {
	cid := func(i int) string { return fmt.Sprintf("%s-%s-%v-%04d", b.id, tag, ks.spoof, i) }
	return inNS(b.node, func() error {
		for i, pod := range pods {
			if err := ctx.Err(); err != nil {
				return err
			}
			ip := netip.AddrFrom4([4]byte{10, 88, byte(1 + i/250), byte(1 + i%250)})
			if err := ks.attach(pod.Path(), cid(i), ip); err != nil {
				return err
			}
			if oneAtATime {
				if err := ks.detach(pod.Path(), cid(i)); err != nil {
					return err
				}
			}
		}
		if oneAtATime {
			return nil
		}
		for i, pod := range pods {
			if err := ks.detach(pod.Path(), cid(i)); err != nil {
				return err
			}
		}
		return nil
	})
}
