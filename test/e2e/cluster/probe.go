package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// EchoPort is where guests (package guest) and nodes (ServeEcho) run
// their TCP echo responders.
const EchoPort = 7777

// busybox provides ping on machines without iputils; package guest needs
// busybox-static anyway.
const busybox = "/bin/busybox"

var rttRE = regexp.MustCompile(`min/avg/max = [0-9.]+/([0-9.]+)/`)

// Ping sends 2 ICMP echo requests from the node, with src as the source
// address, and returns the average round trip.
func (n *Node) Ping(ctx context.Context, src, dst netip.Addr) (time.Duration, error) {
	var out []byte
	err := n.NS.Do(func() error {
		var err error
		out, err = exec.CommandContext(ctx, busybox, "ping", "-c", "2", "-W", "2", "-I", src.String(), dst.String()).CombinedOutput()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("ping %s from %s (%s): %w: %s", dst, n.Name, src, err, strings.TrimSpace(string(out)))
	}
	m := rttRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("ping %s from %s: no round-trip summary in %q", dst, n.Name, out)
	}
	ms, _ := strconv.ParseFloat(string(m[1]), 64)
	return time.Duration(ms * float64(time.Millisecond)), nil
}

// TCPEcho connects from the node (source src) to dst:EchoPort, sends a
// token and expects it back; it returns the connect time.
func (n *Node) TCPEcho(ctx context.Context, src, dst netip.Addr) (time.Duration, error) {
	var conn net.Conn
	start := time.Now()
	err := n.NS.Do(func() error {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		var err error
		conn, err = d.DialContext(ctx, "tcp", netip.AddrPortFrom(dst, EchoPort).String())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("tcp %s from %s (%s): %w", dst, n.Name, src, err)
	}
	rtt := time.Since(start)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	token := fmt.Sprintf("tapbridge-%s-%d\n", n.Name, time.Now().UnixNano())
	if _, err := io.WriteString(conn, token); err != nil {
		return 0, fmt.Errorf("tcp %s from %s: %w", dst, n.Name, err)
	}
	got := make([]byte, len(token))
	if _, err := io.ReadFull(conn, got); err != nil {
		return 0, fmt.Errorf("tcp %s from %s: read echo: %w", dst, n.Name, err)
	}
	if string(got) != token {
		return 0, fmt.Errorf("tcp %s from %s: echo %q, want %q", dst, n.Name, got, token)
	}
	return rtt, nil
}

// ServeEcho runs a TCP echo server on EchoPort in the node's netns (all
// addresses), so guests can probe the node's host addresses with TCP. It
// stops when the cluster is closed.
func (n *Node) ServeEcho() error {
	var ln net.Listener
	err := n.NS.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", EchoPort))
		return err
	})
	if err != nil {
		return fmt.Errorf("echo server on %s: %w", n.Name, err)
	}
	n.c.onClose(func() error {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})
	go serveEcho(ln)
	return nil
}

func serveEcho(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			_, _ = io.Copy(conn, conn)
		}()
	}
}

// Reach pings dst from the node (source src) and then checks TCP echo,
// retrying both until they succeed or retry has passed: a TCG guest on a
// busy 2-core machine can take seconds to answer. It returns the ping's
// average round trip.
func (n *Node) Reach(ctx context.Context, src, dst netip.Addr, retry time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(retry)
	for {
		rtt, err := n.Ping(ctx, src, dst)
		if err == nil {
			_, err = n.TCPEcho(ctx, src, dst)
		}
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return rtt, err
		}
		select {
		case <-ctx.Done():
			return 0, err
		case <-time.After(time.Second):
		}
	}
}
