package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/e2e/cluster"
)

// endpoint is a row and a column of the matrix: a VM, or one host
// address of a node.
type endpoint struct {
	name   string // "vm1" or "node1"
	addr   netip.Addr
	subnet netip.Prefix
	pod    *cluster.Pod  // set for a VM
	node   *cluster.Node // the node the VM runs on, or the node itself
}

// cell is the outcome of one probe pair.
type cell struct {
	ok   bool
	rtt  time.Duration
	note string // what failed
	err  error  // why, for a node's probe
}

// endpoints lists every VM address (IPv4, then IPv6), then every node
// host address.
func (d *demo) endpoints() ([]endpoint, error) {
	var out []endpoint
	for _, p := range d.pods {
		for _, a := range []netip.Prefix{p.IP, p.IP6} {
			if a.IsValid() {
				out = append(out, endpoint{name: p.Name, addr: a.Addr(), subnet: a.Masked(), pod: p, node: p.Node})
			}
		}
	}
	for _, n := range d.c.Nodes {
		addrs, err := n.HostAddrs()
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			out = append(out, endpoint{name: n.Name, addr: a.Addr(), subnet: a.Masked(), node: n})
		}
	}
	return out, nil
}

// vmEndpoints and nodeEndpoints split endpoints' list.
func vmEndpoints(all []endpoint) []endpoint {
	var out []endpoint
	for _, e := range all {
		if e.pod != nil {
			out = append(out, e)
		}
	}
	return out
}

func nodeEndpoints(all []endpoint) []endpoint {
	var out []endpoint
	for _, e := range all {
		if e.pod == nil {
			out = append(out, e)
		}
	}
	return out
}

// targets are the endpoints on src's subnet other than src: across
// subnets there is no router, so those pairs are not probed.
func targets(src endpoint, all []endpoint) []netip.Addr {
	var out []netip.Addr
	for _, e := range all {
		if e.addr != src.addr && e.subnet == src.subnet {
			out = append(out, e.addr)
		}
	}
	return out
}

// boot starts the guests two at a time. Each probes, from inside, every
// endpoint of its subnet with ping and TCP, then stays up as a responder.
// The first wave waits before probing, until the second is up.
func (d *demo) boot(ctx context.Context) error {
	all, err := d.endpoints()
	if err != nil {
		return err
	}
	var guests []cluster.Guest
	for i, p := range d.pods {
		// No address on the command line: the guest's DHCP clients get
		// them from the node agent (IPv6 where the network has some).
		g := cluster.Guest{Pod: p, DHCP: true, DHCP6: p.IP6.IsValid(), Retry: 90 * time.Second}
		for _, e := range vmEndpoints(all) {
			if e.pod == p {
				g.Ping = append(g.Ping, targets(e, all)...)
			}
		}
		g.TCP = g.Ping
		if i < 2 {
			g.Wait = 12 * time.Second
		}
		guests = append(guests, g)
	}
	d.say("booting %d guests with QEMU (TCG), 2 at a time, each on its pod's TAP inside the pod netns, with no address on its kernel command line: udhcpc and dhclient -6 get them from the node agent", len(guests))
	vms, err := d.c.BootAll(ctx, d.image, guests, 2, 3*time.Second, func(e cluster.BootEvent) {
		p := e.Guest.Pod
		switch {
		case ctx.Err() != nil:
			// interrupted: main says so once
		case e.Err != nil:
			d.say("  %s failed after %.1fs: %v", p.Name, e.Elapsed.Seconds(), e.Err)
		case e.VM != nil:
			d.say("  %s is up after %.1fs (TBREADY on its serial console)", p.Name, e.Elapsed.Seconds())
		case e.Elapsed == 0:
			d.say("  %s booting on %s (%s, %s, MAC %s)", p.Name, p.Tap, p.Node.Name, p.IP, p.MAC)
		default:
			d.say("  %s still booting… %.0fs", p.Name, e.Elapsed.Seconds())
		}
	})
	for _, vm := range vms {
		if vm != nil {
			d.vms[vm.Pod] = vm
		}
	}
	return err
}

// probe fills the matrix: VMs report their own probes; nodes probe from
// their netns, from each host address, meanwhile.
func (d *demo) probe(ctx context.Context) error {
	all, err := d.endpoints()
	if err != nil {
		return err
	}
	d.say("probing: guests ping and TCP-echo their subnet from inside; nodes do the same from their netns")
	m := map[[2]netip.Addr]cell{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, src := range nodeEndpoints(all) {
		for _, dst := range targets(src, all) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := nodeProbe(ctx, src, dst)
				mu.Lock()
				m[[2]netip.Addr{src.addr, dst}] = c
				mu.Unlock()
			}()
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- d.guestResults(ctx, all, m, &mu) }()
	wg.Wait()
	if err := <-errc; err != nil {
		return err
	}
	d.printTopology(all)
	d.printMatrix(all, m)
	d.failed += failures(all, m)
	return nil
}

func nodeProbe(ctx context.Context, src endpoint, dst netip.Addr) cell {
	rtt, err := src.node.Reach(ctx, src.addr, dst, 60*time.Second)
	if err != nil {
		return cell{note: "(see below)", err: err}
	}
	return cell{ok: true, rtt: rtt}
}

// guestResults waits for each guest's TBDONE and reads its TBPROBE lines.
func (d *demo) guestResults(ctx context.Context, all []endpoint, m map[[2]netip.Addr]cell, mu *sync.Mutex) error {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	for _, src := range vmEndpoints(all) {
		probes, err := d.vms[src.pod].Probes(ctx)
		if err != nil {
			return err
		}
		for _, dst := range targets(src, all) {
			ping, tcp := probes["ping "+dst.String()], probes[fmt.Sprintf("tcp %s:%d", dst, cluster.EchoPort)]
			c := cell{ok: ping.OK && tcp.OK, rtt: ping.RTT}
			if !ping.OK {
				c.note = "ping"
			} else if !tcp.OK {
				c.note = "tcp"
			}
			mu.Lock()
			m[[2]netip.Addr{src.addr, dst}] = c
			mu.Unlock()
		}
	}
	return nil
}
