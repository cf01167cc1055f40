package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// agentServeTarget is issue 13's bound on serving a new attachment.
const agentServeTarget = 100 * time.Millisecond

// agentSamples are the figures of a run of probe cycles (see
// agentCycles) or of requests on ports already served.
type agentSamples struct {
	served           []time.Duration // ADD's return → the agent's "serving" line
	offer, advertise []time.Duration // DISCOVER → OFFER, Solicit → Advertise
}

func (s *agentSamples) ask(node harness.Netns, g servedGuest) error {
	offer, adv, err := g.ask(node)
	if err != nil {
		return err
	}
	s.offer, s.advertise = append(s.offer, offer), append(s.advertise, adv)
	return nil
}

// agentRun is everything the section measures.
type agentRun struct {
	n                int
	start            procStat      // the agent just started, nothing served
	one, many        procStat      // memory with 1 and with n served
	idleOne, idleN   procStat      // CPU deltas over the idle window
	perAdd           time.Duration // agent CPU per attachment of the burst
	single, fresh    agentSamples  // probe cycles with none / n others served
	spread           agentSamples  // one request each on ports served for a while
	spreadOf, cycles int
}

// sectionAgent serves AgentN dual-stack attachments with the node agent
// and measures it from the guests' side. The agent runs in the node
// netns as the DaemonSet runs it; the attachments are ADDed through the
// plugin binary as the scale section adds its pods (static IPAM, one
// IPv4 and one IPv6 address each, "dhcp" on).
//
// With 1 served: probe cycles, each ADDing one pod, waiting for the
// agent's "serving" line, asking once per family from the guest's TAP,
// and DELing it, so every sample is the first request on its port. With
// N served: one request per family on a spread of the N ports, then the
// same probe cycles with the N served beside. The agent's memory and
// idle CPU are read from /proc at both sizes.
func (b *bench) sectionAgent(ctx context.Context, rep *report) error {
	bin, err := b.agentBinary()
	if err != nil {
		return err
	}
	n := b.opts.AgentN
	if err := b.ensurePods(n + 1); err != nil {
		return err
	}
	logf("agent: %s, %d attachments", bin, n)
	if err := b.agentNodeAddrs(netlink.AddrAdd); err != nil {
		return err
	}
	a, err := b.startAgent(ctx, bin, filepath.Join(b.dir, "state-agent"))
	if err != nil {
		return errors.Join(err, b.agentNodeAddrs(netlink.AddrDel))
	}
	r, err := b.agentPhases(ctx, a, n)
	if err != nil {
		err = fmt.Errorf("%w; the agent's last lines:\n%s", err, a.log.lastLines())
	}
	if err = errors.Join(err, a.stop(), b.agentNodeAddrs(netlink.AddrDel)); err != nil {
		return err
	}
	if err := b.leftBehind(b.node, b.pods[:n+1]); err != nil {
		return err
	}
	b.agentRows(rep, r)
	return nil
}

// agentAddrs are the node's own addresses in the served subnets, put on
// br-ext as an admin's would be: the plugin uses an address it finds
// there and never removes it. Were the plugin to own the IPv6 one, every
// first ADD on the node would add it and wait for its DAD (1.5 s here),
// and with 1 served every probe cycle is a first ADD.
var agentAddrs = []string{"10.91.0.250/16", "fd00:91::fa/64"}

// agentNodeAddrs adds (netlink.AddrAdd) or removes (AddrDel) them; IPv6
// without DAD, as the only node on the bench's L2.
func (b *bench) agentNodeAddrs(op func(netlink.Link, *netlink.Addr) error) error {
	return inNS(b.node, func() error {
		br, err := netlink.LinkByName(bridgeName)
		if err != nil {
			return err
		}
		for _, s := range agentAddrs {
			a, err := netlink.ParseAddr(s)
			if err != nil {
				return err
			}
			a.Flags = unix.IFA_F_NODAD
			if err := op(br, a); err != nil {
				return fmt.Errorf("node address %s on %s: %w", s, bridgeName, err)
			}
		}
		return nil
	})
}

// agentConf is the served network: pod i gets 10.91.x.y/16 and
// fd00:91::x:y/64, and the node's addresses are on br-ext already.
func (b *bench) agentConf(i int) []byte {
	return tapbridgeConf(tbOpts{DataDir: filepath.Join(b.dir, "state-agent"), Node: nodeName,
		HostAddr: agentAddrs[0], Spoof: true, DHCP: true,
		IPAM: staticIPAM(nthAddr(netip.MustParseAddr("10.91.0.0"), i), nthAddr6(netip.MustParseAddr("fd00:91::"), i))})
}

func (b *bench) agentPhases(ctx context.Context, a *agentProc, n int) (*agentRun, error) {
	r := &agentRun{n: n, cycles: min(50, b.opts.AgentSamples), spreadOf: min(n, b.opts.AgentSamples)}
	var err error
	if r.start, err = a.stat(); err != nil {
		return nil, err
	}
	probe, probeConf := b.pods[n], b.agentConf(n)
	b.waitQuiet(ctx)
	// The first cycle holds its port for the memory and idle figures
	// with one served, before any churn.
	r.single, err = b.agentCycles(ctx, a, probe, probeConf, "one", b.opts.AgentSamples, func() (err error) {
		if r.one, err = a.stat(); err != nil {
			return err
		}
		r.idleOne, err = a.idle(ctx, b.opts.AgentIdle)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("1 served: %w", err)
	}
	logf("agent, 1 served: OFFER p50 %.0f µs, Advertise p50 %.0f µs, served %.1f ms after ADD (p50); RSS %.1f MiB; idle %v CPU",
		us(percentile(r.single.offer, 50)), us(percentile(r.single.advertise, 50)), ms(percentile(r.single.served, 50)),
		float64(r.one.rssKB)/1024, r.idleOne.onCPU)
	before, err := a.stat()
	if err != nil {
		return nil, err
	}
	b.waitQuiet(ctx)
	t0 := time.Now()
	batchRes, err := b.runBatch(ctx, batch{Bin: b.tapbridge, Tag: b.id + "-agent", Conf: b.agentConf, Pods: b.pods[:n], K: 1,
		Between: func(added [][]byte) error {
			guests, err := b.allServed(ctx, a, added, t0)
			if err != nil {
				return err
			}
			after, err := a.stat()
			if err != nil {
				return err
			}
			r.perAdd = (after.ticksCPU - before.ticksCPU) / time.Duration(n)
			if r.idleN, err = a.idle(ctx, b.opts.AgentIdle); err != nil {
				return err
			}
			if r.many, err = a.stat(); err != nil {
				return err
			}
			b.waitQuiet(ctx)
			for k := range r.spreadOf {
				if err := r.spread.ask(b.node, guests[k*n/r.spreadOf]); err != nil {
					return err
				}
			}
			r.fresh, err = b.agentCycles(ctx, a, probe, probeConf, "n", r.cycles, nil)
			if err != nil {
				return fmt.Errorf("%d served, probe cycles: %w", n, err)
			}
			hwm, err := a.stat()
			r.many.hwmKB = hwm.hwmKB
			return err
		}})
	if err != nil {
		return nil, fmt.Errorf("%d served: %w", n, err)
	}
	logf("agent: the plugin's ADD p50 %.2f ms, DEL p50 %.2f ms with the agent serving the node",
		ms(percentile(batchRes.Add, 50)), ms(percentile(batchRes.Del, 50)))
	// Every port the agent served, it lets go once its record is gone.
	err = a.waitFor(ctx, 60*time.Second, "a stop for every port it served", func(l *agentLog) bool { return l.stopped == len(l.served) })
	return r, err
}

// allServed waits until the agent serves every attachment of the batch
// and returns their guests.
func (b *bench) allServed(ctx context.Context, a *agentProc, added [][]byte, t0 time.Time) ([]servedGuest, error) {
	guests := make([]servedGuest, len(added))
	for i, out := range added {
		var err error
		if guests[i], err = parseServed(out, b.pods[i]); err != nil {
			return nil, err
		}
	}
	err := a.waitFor(ctx, 120*time.Second, fmt.Sprintf("%q for all %d ports", "serving", len(guests)), func(l *agentLog) bool {
		for _, g := range guests {
			if _, ok := l.served[g.hostIf]; !ok {
				return false
			}
		}
		return true
	})
	logf("agent: %d attachments ADDed and served in %s", len(guests), time.Since(t0).Round(time.Millisecond))
	return guests, err
}

// agentCycles runs count probe cycles on pod: ADD, wait for the agent to
// serve the port, ask once per family from the guest, DEL. hold, if set,
// runs in the first cycle while the port is served.
func (b *bench) agentCycles(ctx context.Context, a *agentProc, pod harness.Netns, conf []byte, tag string, count int, hold func() error) (agentSamples, error) {
	var s agentSamples
	for c := range count {
		call := pluginCall{Bin: b.tapbridge, Command: "ADD", ContainerID: fmt.Sprintf("%s-agent-%s-%d", b.id, tag, c),
			Netns: pod.Path(), IfName: podIfName, Path: b.cniPath(), Stdin: conf}
		var res callResult
		var returned time.Time
		err := inNS(b.node, func() (err error) {
			res, err = call.run(ctx)
			returned = time.Now()
			return err
		})
		if err != nil {
			return s, err
		}
		var h func() error
		if c == 0 {
			h = hold
		}
		err = b.probeCycle(ctx, a, &s, res.Stdout, returned, pod, h)
		call.Command, call.Stdin = "DEL", withPrevResult(conf, res.Stdout)
		if derr := inNS(b.node, func() error { _, err := call.run(ctx); return err }); err == nil {
			err = derr
		}
		if err != nil {
			return s, err
		}
	}
	return s, nil
}

// probeCycle is one cycle's part while the port is attached; hold, if
// set, runs last.
func (b *bench) probeCycle(ctx context.Context, a *agentProc, s *agentSamples, added []byte, returned time.Time, pod harness.Netns, hold func() error) error {
	g, err := parseServed(added, pod)
	if err != nil {
		return err
	}
	at, err := a.servedAt(ctx, g.hostIf, 10*time.Second)
	if err != nil {
		return err
	}
	s.served = append(s.served, at.Sub(returned))
	if err := s.ask(b.node, g); err != nil {
		return err
	}
	if hold != nil {
		return hold()
	}
	return nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func (b *bench) agentRows(rep *report, r *agentRun) {
	sec := fmt.Sprintf("Agent N=%d, dual-stack, served", r.n)
	q := func(s []time.Duration) string {
		return fmt.Sprintf("%.0f / %.0f", us(percentile(s, 50)), us(percentile(s, 99)))
	}
	ratio := func(a, b []time.Duration) float64 { return float64(percentile(a, 50)) / float64(percentile(b, 50)) }
	for _, p := range []struct {
		what                  string
		spread, fresh, single []time.Duration
	}{{"DISCOVER→OFFER", r.spread.offer, r.fresh.offer, r.single.offer}, {"Solicit→Advertise", r.spread.advertise, r.fresh.advertise, r.single.advertise}} {
		rep.add(info(row{Section: sec, What: fmt.Sprintf("%s µs p50 / p99 from the guest (TAP write to reply read, the agent idle for %s before each request), one on each of %d of the %d served ports", p.what, askIdle, r.spreadOf, r.n),
			TB: q(p.spread), Ref: fmt.Sprintf("1 served (%d attachments in turn, each ADDed, asked, DELed): %s", len(p.single), q(p.single))}, ratio(p.spread, p.single)))
		rep.add(info(row{Section: sec, What: fmt.Sprintf("%s µs p50 / p99 the same way on new attachments, each ADDed, asked and DELed with the %d served beside it (%d attachments)", p.what, r.n, len(p.fresh)),
			TB: q(p.fresh), Ref: "none beside it: " + q(p.single)}, ratio(p.fresh, p.single)))
	}
	served := row{Section: sec, What: fmt.Sprintf("ADD's return → the agent's \"serving\" line, ms p50 / p99, a new attachment with %d served (%d ADDs); negative: served before ADD returned", r.n, len(r.fresh.served)),
		TB:    fmt.Sprintf("%.1f / %.1f", ms(percentile(r.fresh.served, 50)), ms(percentile(r.fresh.served, 99))),
		Ref:   fmt.Sprintf("none served (%d ADDs): %.1f / %.1f", len(r.single.served), ms(percentile(r.single.served, 50)), ms(percentile(r.single.served, 99))),
		Ratio: "—", Target: "p99 ≤ 100 ms", Result: "PASS"} // times around 0, of either sign: no ratio
	if percentile(r.fresh.served, 99) > agentServeTarget {
		served.Result = "MISS"
	}
	rep.add(served)
	mib := func(kb int64) float64 { return float64(kb) / 1024 }
	rep.add(info(row{Section: sec, What: "agent RSS / peak RSS (VmRSS / VmHWM, /proc), MiB",
		TB: fmt.Sprintf("%.1f / %.1f", mib(r.many.rssKB), mib(r.many.hwmKB)),
		Ref: fmt.Sprintf("1 served: %.1f / %.1f; just started: %.1f; %.1f KiB per served port", mib(r.one.rssKB), mib(r.one.hwmKB),
			mib(r.start.rssKB), float64(r.many.rssKB-r.one.rssKB)/float64(max(r.n-1, 1)))}, float64(r.many.rssKB)/float64(r.one.rssKB)))
	idle := func(s procStat) string {
		return fmt.Sprintf("%.0f ms (on CPU %.2f ms, %d wake-ups)", ms(s.ticksCPU), ms(s.onCPU), s.runs)
	}
	rep.add(row{Section: sec, What: fmt.Sprintf("agent CPU while idle over %s: utime+stime (/proc/pid/stat, 10 ms ticks), on-CPU time and times scheduled summed over its threads (schedstat)", b.opts.AgentIdle),
		TB: idle(r.idleN), Ref: "1 served: " + idle(r.idleOne), Ratio: "—", Target: "—", Result: "info"})
	rep.add(row{Section: sec, What: fmt.Sprintf("agent CPU per attachment while %d were ADDed one by one and served (inotify events, record read, port start), ms", r.n),
		TB: fmt.Sprintf("%.2f", ms(r.perAdd)), Ratio: "—", Target: "—", Result: "info"})
	rep.note("Agent: tapbridge-agent runs in the node netns as the DaemonSet runs it (metrics on, log level info), on a served network (\"dhcp\" on, static IPAM with an IPv4 and an IPv6 address per pod, spoofCheck on). Each request is written on the guest's TAP as QEMU writes it (a DHCPv4 DISCOVER and a DHCPv6 Solicit from insomniacslk/dhcp's constructors); the time runs until the reply, checked to carry the guest's own address, is read from the TAP. The port's token bucket (20 at once, then 5/s) allows few requests per port, so samples are spread over ports: with 1 served, each sample is a new attachment ADDed, served, asked once per family and DELed. Before each request the agent is left idle for %s, as a guest's request finds it on a node: back to back, with the agent's threads still awake, requests were answered about twice as fast in a trial run. \"Serving\" times are the agent's own log timestamps against the bench's clock at ADD's return; the record is published before ADD returns, so a port can be served first.", askIdle)
}
