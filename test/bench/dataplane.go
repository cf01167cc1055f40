package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// The data-plane layouts each get two fresh nodes whose br-ext bridges are
// joined by an uplink veth (the flat L2), a guest TAP on each node, and
// frames pumped from the TAP on node A to the TAP on node B (the veth
// floor has a packet socket where the others have a TAP).
type dpLayout struct {
	key, label string
	build      func(ctx context.Context, p *dpPair) ([2]endpoint, error)
}

type dpPair struct {
	tag   string
	nodes [2]harness.Netns
	all   []harness.Netns
	fds   []int
	eps   [2]endpoint
}

var frameSizes = []struct {
	label string
	eth   int // Ethernet bytes without FCS
}{{"1500 B", 1514}, {"64 B", 60}}

func (b *bench) layouts() []dpLayout {
	var out []dpLayout
	for _, l := range b.allLayouts() {
		if listed(b.opts.Layouts, l.key) {
			out = append(out, l)
		}
	}
	return out
}

func (b *bench) allLayouts() []dpLayout {
	lays := []dpLayout{
		{"tb", "tapbridge (TAP → redirect → veth → br-ext)", func(ctx context.Context, p *dpPair) ([2]endpoint, error) {
			return b.dpTapbridge(ctx, p, true)
		}},
		{"tb-nospoof", `tapbridge "spoofCheck": false`, func(ctx context.Context, p *dpPair) ([2]endpoint, error) {
			return b.dpTapbridge(ctx, p, false)
		}},
		{"tb-hook", `tapbridge "spoofCheck": false plus an empty ingress chain (policy accept) on its port`, b.dpTapbridgeHookOnly},
		{"direct", "direct TAP on br-ext", b.dpDirect},
		{"inpod", "in-pod bridge (KubeVirt bridge binding)", b.dpInPod},
		{"vethfloor", "veth floor (packet socket on the pod end of a veth on br-ext; no TAP, no tc)", b.dpVethFloor},
	}
	if b.alt != "" { // an A/B of a data-path change: the -alt build's line in the log
		lays = append(lays, dpLayout{"tb-alt", "tapbridge (-alt build)", func(ctx context.Context, p *dpPair) ([2]endpoint, error) {
			eps, _, err := b.dpTapbridgePorts(ctx, p, b.alt, true)
			return eps, err
		}})
	}
	return lays
}

// newPair makes nodes A and B, each with br-ext, and the uplink veth.
func (b *bench) newPair(key string) (*dpPair, error) {
	p := &dpPair{tag: b.id + "-dp-" + key}
	for i, side := range []string{"a", "b"} {
		n, err := b.reg.newNetns(p.tag + "-" + side)
		if err != nil {
			return p, err
		}
		p.nodes[i], p.all = n, append(p.all, n)
		mac := net.HardwareAddr{0x02, 0, 0, 0, 0xbe, byte(0x0a + i)}
		if err := inNS(n, func() error { _, err := addBridge(bridgeName, mac); return err }); err != nil {
			return p, err
		}
	}
	err := inNS(p.nodes[0], func() error {
		br, err := netlink.LinkByName(bridgeName)
		if err != nil {
			return err
		}
		return addUplink(br.(*netlink.Bridge), "uplink0", "uplink0", p.nodes[1])
	})
	if err != nil {
		return p, err
	}
	return p, inNS(p.nodes[1], func() error { return enslave("uplink0", bridgeName) })
}

func (p *dpPair) close(reg *registry) error {
	for _, fd := range p.fds {
		unix.Close(fd)
	}
	return reg.drop(p.all...)
}

func enslave(port, master string) error {
	l, err := netlink.LinkByName(port)
	if err != nil {
		return fmt.Errorf("find %s: %w", port, err)
	}
	m, err := netlink.LinkByName(master)
	if err != nil {
		return fmt.Errorf("find %s: %w", master, err)
	}
	if err := netlink.LinkSetMaster(l, m); err != nil {
		return fmt.Errorf("enslave %s to %s: %w", port, master, err)
	}
	return netlink.LinkSetUp(l)
}

func (p *dpPair) newPod(b *bench, side int) (harness.Netns, error) {
	pod, err := b.reg.newNetns(fmt.Sprintf("%s-pod%d", p.tag, side))
	if err == nil {
		p.all = append(p.all, pod)
	}
	return pod, err
}

// dpTapbridge attaches one pod per node with the plugin binary, exec'd as
// the runtime does, and opens the TAP the result names, as QEMU would.
func (b *bench) dpTapbridge(ctx context.Context, p *dpPair, spoof bool) ([2]endpoint, error) {
	eps, _, err := b.dpTapbridgePorts(ctx, p, b.tapbridge, spoof)
	return eps, err
}

// dpTapbridgeHookOnly is tapbridge without anti-spoofing plus, on each
// host port, a netdev ingress base chain like anti-spoofing's but with no
// rule and policy accept: what hooking a chain on the port costs per frame
// before any rule is evaluated, beside what the rules add (tb against it).
func (b *bench) dpTapbridgeHookOnly(ctx context.Context, p *dpPair) ([2]endpoint, error) {
	eps, ports, err := b.dpTapbridgePorts(ctx, p, b.tapbridge, false)
	if err != nil {
		return eps, err
	}
	for side, port := range ports {
		if err := inNS(p.nodes[side], func() error { return emptyIngressChain(port) }); err != nil {
			return eps, err
		}
	}
	return eps, nil
}

// emptyIngressChain hooks an accept-all base chain on port's ingress, in
// a table of its own (the node netns goes, and the table with it).
func emptyIngressChain(port string) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	accept := nftables.ChainPolicyAccept
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyNetdev, Name: "bench-hook-" + port})
	c.AddChain(&nftables.Chain{Name: "guest", Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookIngress,
		Priority: nftables.ChainPriorityFilter, Device: port, Policy: &accept})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("hook an empty chain on %s: %w", port, err)
	}
	return nil
}

// dpTapbridgePorts attaches a guest on each side with tapbridge and opens
// its TAP with the tapbridge binary bin; it also returns each side's host
// port (the veth's host end).
func (b *bench) dpTapbridgePorts(ctx context.Context, p *dpPair, bin string, spoof bool) ([2]endpoint, [2]string, error) {
	var ports [2]string
	var eps [2]endpoint
	for side := range 2 {
		pod, err := p.newPod(b, side)
		if err != nil {
			return eps, ports, err
		}
		dir := filepath.Join(b.dir, p.tag+fmt.Sprint(side))
		conf := tapbridgeConf(tbOpts{DataDir: filepath.Join(dir, "state"), Node: fmt.Sprintf("node-%d", side),
			HostAddr: fmt.Sprintf("10.90.0.%d/24", 250+side), Spoof: spoof,
			IPAM: hostLocal(filepath.Join(dir, "ipam"), "10.90.0.0/24", fmt.Sprintf("10.90.0.%d", 10+100*side), fmt.Sprintf("10.90.0.%d", 99+100*side))})
		var out []byte
		err = inNS(p.nodes[side], func() error {
			r, err := pluginCall{Bin: bin, Command: "ADD", ContainerID: fmt.Sprintf("%s-%d", p.tag, side),
				Netns: pod.Path(), IfName: podIfName, Path: b.cniPath(), Stdin: conf}.run(ctx)
			out = r.Stdout
			return err
		})
		if err != nil {
			return eps, ports, err
		}
		hostIf, tapName, ep, err := parseAttachment(out)
		if err != nil {
			return eps, ports, err
		}
		if err := inNS(pod, func() (err error) { ep.fd, err = openTap(tapName); return err }); err != nil {
			return eps, ports, err
		}
		p.fds, eps[side], ports[side] = append(p.fds, ep.fd), ep, hostIf
	}
	return eps, ports, nil
}

// parseAttachment reads the host port, TAP name, guest MAC and IP from tapbridge's
// result (interfaces: host veth, pod end with the guest MAC, TAP).
func parseAttachment(out []byte) (hostIf, tap string, ep endpoint, err error) {
	var res struct {
		Interfaces []struct{ Name, Mac string }
		IPs        []struct{ Address string }
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Interfaces) != 3 || len(res.IPs) == 0 {
		return "", "", endpoint{}, fmt.Errorf("unexpected ADD result %s: %v", out, err)
	}
	mac, err := net.ParseMAC(res.Interfaces[2].Mac)
	if err != nil {
		return "", "", endpoint{}, err
	}
	pfx, err := netip.ParsePrefix(res.IPs[0].Address)
	return res.Interfaces[0].Name, res.Interfaces[1].Name, endpoint{mac: mac, ip: pfx.Addr()}, err
}

// guest is the MAC and IP a hand-made layout's guest uses on side i.
func guest(i int) endpoint {
	return endpoint{mac: net.HardwareAddr{0x02, 0, 0, 0, 0x5a, byte(i + 1)}, ip: netip.AddrFrom4([4]byte{10, 90, 0, byte(11 + i)})}
}

// dpDirect is the hand-made recipe: the TAP itself is a port of br-ext.
func (b *bench) dpDirect(_ context.Context, p *dpPair) ([2]endpoint, error) {
	var eps [2]endpoint
	for side := range 2 {
		ep := guest(side)
		err := inNS(p.nodes[side], func() (err error) {
			if ep.fd, err = openTap("tap0"); err != nil {
				return err
			}
			p.fds = append(p.fds, ep.fd)
			return enslave("tap0", bridgeName)
		})
		if err != nil {
			return eps, err
		}
		eps[side] = ep
	}
	return eps, nil
}

// dpInPod is what KubeVirt's bridge binding builds: a veth from br-ext into
// the pod, and there a bridge enslaving the pod end and the TAP.
func (b *bench) dpInPod(_ context.Context, p *dpPair) ([2]endpoint, error) {
	return p.vethLayout(b, func() (int, error) {
		if _, err := addBridge("k6t-eth0", nil); err != nil {
			return -1, err
		}
		if err := enslave("eth0", "k6t-eth0"); err != nil {
			return -1, err
		}
		fd, err := openTap("tap0")
		if err != nil {
			return -1, err
		}
		return fd, enslave("tap0", "k6t-eth0")
	})
}

// vethLayout builds a hand-made layout on a veth from br-ext into a pod
// per node: inPod runs in the pod and returns the guest's fd.
func (p *dpPair) vethLayout(b *bench, inPod func() (int, error)) ([2]endpoint, error) {
	var eps [2]endpoint
	for side := range 2 {
		pod, err := p.podOnVeth(b, side)
		if err != nil {
			return eps, err
		}
		ep := guest(side)
		err = inNS(pod, func() (err error) {
			ep.fd, err = inPod()
			if ep.fd >= 0 {
				p.fds = append(p.fds, ep.fd)
			}
			return err
		})
		if err != nil {
			return eps, err
		}
		eps[side] = ep
	}
	return eps, nil
}

// podOnVeth makes a pod on node side joined to its br-ext by a veth (veth0
// on the node, eth0 in the pod), as the hand-made veth layouts have it.
func (p *dpPair) podOnVeth(b *bench, side int) (harness.Netns, error) {
	pod, err := p.newPod(b, side)
	if err != nil {
		return pod, err
	}
	err = inNS(p.nodes[side], func() error {
		br, err := netlink.LinkByName(bridgeName)
		if err != nil {
			return err
		}
		return addUplink(br.(*netlink.Bridge), "veth0", "eth0", pod)
	})
	return pod, err
}

// learn makes sure a frame gets through in both directions, so every
// bridge on the path knows both MACs (the measurement is of forwarding,
// not flooding) and every port forwards: a new bridge port only does once
// the kernel's linkwatch has seen its carrier, which can take a second.
func learn(eps [2]endpoint) error {
	deadline := time.Now().Add(3 * time.Second)
	for nonce := uint32(0x1ea40000); time.Now().Before(deadline); nonce++ {
		ok := true
		for i := range 2 {
			drain(eps[1-i].fd)
			unix.Write(eps[i].fd, frame(60, eps[i], eps[1-i], nonce))
			ok = ok && arrives(eps[1-i].fd, nonce, 100*time.Millisecond)
		}
		if ok {
			return nil
		}
	}
	return errors.New("no frame gets through between the two guests (TAPs, or the floor's packet sockets)")
}

// arrives waits up to d for a frame of the phase on a TAP.
func arrives(fd int, nonce uint32, d time.Duration) bool {
	buf := make([]byte, 65536)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		n, err := unix.Read(fd, buf)
		if err == nil && ours(buf[:n], nonce) {
			return true
		}
		if err != nil {
			_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 10)
		}
	}
	return false
}

// dpResult is frames/s by size label, and latencies of small frames.
type dpResult struct {
	rates  map[string][]rate // per round
	latP50 []float64         // µs, per round
	latP99 []float64
}

// fps and perCPU are medians over rounds.
func (r *dpResult) fps(size string) float64 {
	var v []float64
	for _, x := range r.rates[size] {
		v = append(v, x.FPS)
	}
	return median(v)
}

func (r *dpResult) perCPU(size string) float64 {
	var v []float64
	for _, x := range r.rates[size] {
		v = append(v, x.PerCPU)
	}
	return median(v)
}

// dpRounds splits each measurement into interleaved rounds, so noise from
// other tenants hits every layout alike; figures are medians over rounds.
const dpRounds = 8

// dataPlane builds every layout, then measures them interleaved in rounds,
// and the paced latency last.
func (b *bench) dataPlane(ctx context.Context) (map[string]*dpResult, error) {
	lays := b.layouts()
	pairs := map[string]*dpPair{}
	defer func() {
		for _, p := range pairs {
			if err := p.close(b.reg); err != nil {
				logf("data plane: remove %s: %v", p.tag, err)
			}
		}
	}()
	res := map[string]*dpResult{}
	for _, l := range lays {
		p, err := b.newPair(l.key)
		pairs[l.key], res[l.key] = p, &dpResult{rates: map[string][]rate{}}
		if err != nil {
			return nil, err
		}
		if p.eps, err = l.build(ctx, p); err != nil {
			return nil, fmt.Errorf("data plane %s: %w", l.key, err)
		}
	}
	for round := range dpRounds {
		order := lays
		if round%2 == 1 {
			order = reversed(lays)
		}
		for _, l := range order {
			if err := b.dpRound(ctx, pairs[l.key].eps, res[l.key], l.key); err != nil {
				return nil, err
			}
		}
	}
	return res, b.latencies(lays, pairs, res)
}

// latencies goes in interleaved rounds too: one scheduler stall of the
// reader on a busy machine would otherwise be the whole p99.
func (b *bench) latencies(lays []dpLayout, pairs map[string]*dpPair, res map[string]*dpResult) error {
	const latRounds = 4
	for round := range latRounds {
		for _, l := range lays {
			lat, err := latency(pairs[l.key].eps[0], pairs[l.key].eps[1], max(b.opts.LatSamples/latRounds, 50), rand.Uint32()|1)
			if err != nil {
				return fmt.Errorf("data plane %s round %d: %w", l.key, round, err)
			}
			r := res[l.key]
			r.latP50 = append(r.latP50, float64(percentile(lat, 50))/1e3)
			r.latP99 = append(r.latP99, float64(percentile(lat, 99))/1e3)
		}
	}
	return nil
}

func (b *bench) dpRound(ctx context.Context, eps [2]endpoint, r *dpResult, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := learn(eps); err != nil {
		return fmt.Errorf("data plane %s: %w", key, err)
	}
	window := max(b.opts.DPTime/dpRounds, 100*time.Millisecond)
	for _, s := range frameSizes {
		x, err := throughput(eps[0], eps[1], s.eth, window, rand.Uint32()|1)
		if err != nil {
			return fmt.Errorf("data plane %s %s: %w", key, s.label, err)
		}
		if x.FPS == 0 {
			return errors.New("data plane " + key + " " + s.label + ": no frame arrived")
		}
		r.rates[s.label] = append(r.rates[s.label], x)
		logf("data plane %-10s %-6s %8.0f frames/s, %8.0f frames/CPU-s, %5.1f%% of written frames arrived",
			key, s.label, x.FPS, x.PerCPU, 100*x.Delivered)
	}
	return nil
}
