package main

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/internal/link"
)

// dpVethFloor is the least any design that joins the VM through a veth
// can cost: per node a veth whose host end is a port of br-ext and whose
// pod end (no IP, IPv6 off) carries an AF_PACKET socket instead of a TAP.
// No TAP, no tc: what remains is the veth hop every such design pays.
func (b *bench) dpVethFloor(_ context.Context, p *dpPair) ([2]endpoint, error) {
	return p.vethLayout(b, func() (int, error) {
		if err := link.UpWithoutIPv6("eth0"); err != nil {
			return -1, err
		}
		return openPacket("eth0")
	})
}

// packetRcvBuf is the floor socket's receive buffer: about what a TAP
// queues (txqueuelen 1000 frames of 1514 bytes, at their skb truesize),
// so that a reader that falls behind for a moment loses no more frames
// than it would on a TAP. The default (rmem_default) holds ~100 of them.
const packetRcvBuf = 4 << 20

// openPacket opens an AF_PACKET SOCK_RAW socket bound to a link of the
// calling thread's netns that reads and writes the buffers a TAP opened
// with IFF_VNET_HDR does: PACKET_VNET_HDR prefixes every frame with the
// same struct virtio_net_hdr. It is non-blocking like the TAP fds, and
// PACKET_IGNORE_OUTGOING keeps outgoing frames of the link out of its
// queue, as a TAP only reads what the kernel sends to it. (The kernel
// already skips the sending socket itself, skb_loop_sk; the option also
// covers frames any other socket sends on the link.)
func openPacket(name string) (int, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return -1, fmt.Errorf("find %s: %w", name, err)
	}
	// Protocol 0 until bind: a socket made with ETH_P_ALL would capture
	// frames of every link in the netns until it is bound.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("packet socket: %w", err)
	}
	opts := []struct {
		level, opt, val int
		name            string
	}{
		{unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1, "PACKET_VNET_HDR"},
		{unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING"},
		{unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, packetRcvBuf, "SO_RCVBUFFORCE"},
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("packet socket on %s: %s: %w", name, o.name, err)
		}
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.Attrs().Index}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind packet socket to %s: %w", name, err)
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
