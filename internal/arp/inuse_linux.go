// Package arp tells whether an IPv4 address is already in use on an
// Ethernet segment, so that a node can safely take an address from a pool
// shared over a flat L2 (a host bridge): it sends ARP probes (RFC 5227) and
// listens for another host's answer or probe. IPv6 needs nothing of the
// kind here: the kernel's own duplicate address detection runs when the
// address is added.
//
// Frames are sent and received on an AF_PACKET socket, so the probing host
// needs no address of its own on the link, and the kernel's neighbour tables
// are left untouched.
package arp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// InUse reports whether some other host on the link with index ifindex
// answers for addr, an IPv4 unicast address.
//
// It sends ARP probes (sender IP 0.0.0.0, sender MAC = the link's MAC,
// target = addr, broadcast); a conflict is any ARP packet received whose
// sender IP is addr (a reply, or another host's announcement), or another
// host's probe for addr.
//
// InUse returns as soon as a conflict is seen; otherwise it takes about
// (Count-1)*Interval + Wait. It runs in the calling thread's current network
// namespace, so callers switching namespaces must lock the OS thread. A
// cancelled ctx ends the probe early with an error wrapping ctx.Err().
func InUse(ctx context.Context, ifindex int, addr netip.Addr, opts Options) (bool, error) {
	found, err := inUse(ctx, ifindex, addr, opts)
	if err != nil {
		return false, fmt.Errorf("probe %s on ifindex %d: %w", addr, ifindex, err)
	}
	return found, nil
}

func inUse(ctx context.Context, ifindex int, addr netip.Addr, opts Options) (bool, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return false, err
	}
	if addr, err = targetAddr(addr); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	mac, err := linkMAC(ifindex)
	if err != nil {
		return false, err
	}
	// The socket is open and bound before the first probe goes out, so an
	// answer cannot arrive before anyone is listening.
	c, err := listen(ifindex)
	if err != nil {
		return false, err
	}
	defer c.close()
	return run(ctx, c, prober{mac: mac, addr: addr}, opts)
}

// linkMAC returns the Ethernet address of the link, which is both the
// sender of our probes and how our own frames are recognised.
func linkMAC(ifindex int) (net.HardwareAddr, error) {
	ifi, err := net.InterfaceByIndex(ifindex)
	if err != nil {
		return nil, fmt.Errorf("look up link: %w", err)
	}
	if len(ifi.HardwareAddr) != macLen {
		return nil, fmt.Errorf("link %s has no Ethernet address", ifi.Name)
	}
	return ifi.HardwareAddr, nil
}

// prober is who probes (the link's MAC) and for what address.
type prober struct {
	mac  net.HardwareAddr
	addr netip.Addr
}

// run sends opts.Count probes opts.Interval apart, listening in between and
// for opts.Wait after the last one, and stops at the first conflict.
func run(ctx context.Context, c *packetConn, p prober, opts Options) (bool, error) {
	// Cancellation must wake a blocked receive, not just be noticed later.
	stop := context.AfterFunc(ctx, c.interrupt)
	defer stop()

	request := probeFrame(p.mac, p.addr)
	for i := range opts.Count {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		if err := c.send(request); err != nil {
			return false, ctxOr(ctx, err)
		}
		listenFor := opts.Interval
		if i == opts.Count-1 {
			listenFor = opts.Wait
		}
		found, err := watch(ctx, c, p, time.Now().Add(listenFor))
		if found || err != nil {
			return found, err
		}
	}
	return false, nil
}

// watch reads frames until deadline and reports whether one of them is a
// conflict.
func watch(ctx context.Context, c *packetConn, p prober, deadline time.Time) (bool, error) {
	if err := c.setReadDeadline(deadline); err != nil {
		return false, err
	}
	// Checked after arming the deadline: a cancellation that interrupted
	// before would have had its deadline overwritten just now.
	if err := ctx.Err(); err != nil {
		return false, err
	}
	for {
		frame, outgoing, err := c.recv()
		if err != nil {
			if isTimeout(err) && ctx.Err() == nil {
				return false, nil
			}
			return false, ctxOr(ctx, err)
		}
		// The packet socket also sees what this host transmits on the
		// link, including our own probes.
		if !outgoing && conflict(frame, p.mac, p.addr) {
			return true, nil
		}
	}
}

// ctxOr returns ctx's error if ctx is done, since an interrupted socket
// operation then failed because of the cancellation; otherwise err.
func ctxOr(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	return err
}
