package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// askIdle is how long every request lets the agent be idle first: a
// guest's request finds the agent's threads asleep on a real node, and
// requests sent back to back, which find them still running, came out
// at about half the p50 in a trial run. It also makes the samples of
// ports just ADDed and of ports served for long alike.
const askIdle = 20 * time.Millisecond

// answerLimit bounds the wait for one reply: a served port that does not
// answer fails the section rather than skewing it.
const answerLimit = 2 * time.Second

// Where a DHCPv6 client sends (RFC 8415 7.1).
var (
	allDHCPServers    = net.ParseIP("ff02::1:2")
	allDHCPServersMAC = net.HardwareAddr{0x33, 0x33, 0, 1, 0, 2}
)

// servedGuest is one attachment as its guest sees it: the TAP it opens,
// its MAC and the addresses ADD gave it, and the host port the agent
// serves it on.
type servedGuest struct {
	pod      harness.Netns
	tap      string
	podIf    string // the pod's end of the veth
	hostIf   string
	mac      net.HardwareAddr
	ip4, ip6 netip.Addr
}

// parseServed reads tapbridge's ADD result (interfaces: host veth, TAP,
// pod end with the guest MAC last; one address per family).
func parseServed(out []byte, pod harness.Netns) (servedGuest, error) {
	var res struct {
		Interfaces []struct{ Name, Mac string }
		IPs        []struct{ Address string }
	}
	g := servedGuest{pod: pod}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Interfaces) != 3 {
		return g, fmt.Errorf("unexpected ADD result %s: %v", out, err)
	}
	g.hostIf, g.tap, g.podIf = res.Interfaces[0].Name, res.Interfaces[1].Name, res.Interfaces[2].Name
	var err error
	if g.mac, err = net.ParseMAC(res.Interfaces[2].Mac); err != nil {
		return g, err
	}
	for _, ip := range res.IPs {
		p, err := netip.ParsePrefix(ip.Address)
		if err != nil {
			return g, err
		}
		if p.Addr().Is4() {
			g.ip4 = p.Addr()
		} else {
			g.ip6 = p.Addr()
		}
	}
	if !g.ip4.IsValid() || !g.ip6.IsValid() {
		return g, fmt.Errorf("ADD result %s: want an IPv4 and an IPv6 address", out)
	}
	return g, nil
}

// ask opens the guest's TAP as QEMU does and times, from the guest's
// side, one DISCOVER until its OFFER and one Solicit until its Advertise,
// each reply checked to carry the guest's own address. node is where
// the host end of the veth is.
func (g servedGuest) ask(node harness.Netns) (offer, advertise time.Duration, err error) {
	fd := -1
	err = inNS(g.pod, func() (err error) {
		if fd, err = openTap(g.tap); err != nil {
			return err
		}
		return waitOperUp(g.podIf, g.tap)
	})
	if fd >= 0 {
		defer unix.Close(fd)
	}
	if err == nil {
		err = inNS(node, func() error { return waitOperUp(g.hostIf) })
	}
	if err != nil {
		return 0, 0, err
	}
	if offer, err = g.discover(fd); err != nil {
		return 0, 0, fmt.Errorf("guest %s on %s: DISCOVER: %w", g.mac, g.hostIf, err)
	}
	if advertise, err = g.solicit(fd); err != nil {
		return 0, 0, fmt.Errorf("guest %s on %s: Solicit: %w", g.mac, g.hostIf, err)
	}
	return offer, advertise, nil
}

// waitOperUp waits until links of the calling thread's netns carry
// frames. A link's queue is set up after its carrier comes on, by the
// kernel's linkwatch work, asynchronously: until then it drops what is
// sent through it. That is the TAP just opened, and the veth ends and
// redirects the ADD has just made, a few milliseconds before a probe
// cycle asks; a VM's guest asks seconds after its TAP was opened.
func waitOperUp(names ...string) error {
	deadline := time.Now().Add(answerLimit)
	for _, name := range names {
		for {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return fmt.Errorf("find %s: %w", name, err)
			}
			if l.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s is %s %s after it was made", name, l.Attrs().OperState, answerLimit)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

func (g servedGuest) discover(fd int) (time.Duration, error) {
	disc, err := dhcpv4.NewDiscovery(g.mac)
	if err != nil {
		return 0, err
	}
	req := harness.UDP4(g.mac, harness.Broadcast, net.IPv4zero, net.IPv4bcast, dhcpv4.ClientPort, dhcpv4.ServerPort, disc.ToBytes())
	return roundTrip(fd, req, func(eth []byte) (bool, error) {
		payload, ok := udpPayload(eth, unix.ETH_P_IP, dhcpv4.ClientPort)
		if !ok {
			return false, nil
		}
		m, err := dhcpv4.FromBytes(payload)
		if err != nil || m.TransactionID != disc.TransactionID {
			return false, nil
		}
		if m.MessageType() != dhcpv4.MessageTypeOffer || !m.YourIPAddr.Equal(g.ip4.AsSlice()) {
			return false, fmt.Errorf("answered with %s for %s, want an OFFER of %s", m.MessageType(), m.YourIPAddr, g.ip4)
		}
		return true, nil
	})
}

func (g servedGuest) solicit(fd int) (time.Duration, error) {
	sol, err := dhcpv6.NewSolicit(g.mac)
	if err != nil {
		return 0, err
	}
	req := harness.UDP6(g.mac, allDHCPServersMAC, harness.LinkLocal(g.mac), allDHCPServers, dhcpv6.DefaultClientPort, dhcpv6.DefaultServerPort, sol.ToBytes())
	return roundTrip(fd, req, func(eth []byte) (bool, error) {
		payload, ok := udpPayload(eth, unix.ETH_P_IPV6, dhcpv6.DefaultClientPort)
		if !ok {
			return false, nil
		}
		d, err := dhcpv6.FromBytes(payload)
		m, isMsg := d.(*dhcpv6.Message)
		if err != nil || !isMsg || m.TransactionID != sol.TransactionID {
			return false, nil
		}
		var addr net.IP
		if ia := m.Options.OneIANA(); ia != nil {
			if a := ia.Options.OneAddress(); a != nil {
				addr = a.IPv6Addr
			}
		}
		if m.MessageType != dhcpv6.MessageTypeAdvertise || !addr.Equal(g.ip6.AsSlice()) {
			return false, fmt.Errorf("answered with %s for %s, want an Advertise of %s", m.MessageType, addr, g.ip6)
		}
		return true, nil
	})
}

// roundTrip waits askIdle, writes req (an Ethernet frame) on the TAP and reads until
// accept takes a frame: the time from the write to that read is what
// the guest waits. Other frames (the port's router advertisement, the
// bridge's multicast) are skipped.
func roundTrip(fd int, req []byte, accept func(eth []byte) (bool, error)) (time.Duration, error) {
	time.Sleep(askIdle)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	drain(fd)
	out := append(make([]byte, vnetHdrLen), req...)
	buf := make([]byte, 65536)
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	t0 := time.Now()
	if _, err := unix.Write(fd, out); err != nil {
		return 0, fmt.Errorf("write tap: %w", err)
	}
	deadline := t0.Add(answerLimit)
	for {
		n, err := unix.Read(fd, buf)
		at := time.Now()
		switch {
		case errors.Is(err, unix.EAGAIN):
			left := time.Until(deadline)
			if left <= 0 {
				return 0, fmt.Errorf("no answer within %s", answerLimit)
			}
			if _, err := unix.Poll(pfd, int(left/time.Millisecond)+1); err != nil && !errors.Is(err, unix.EINTR) {
				return 0, fmt.Errorf("poll tap: %w", err)
			}
			continue
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return 0, fmt.Errorf("read tap: %w", err)
		}
		if n <= vnetHdrLen {
			continue
		}
		ok, err := accept(buf[vnetHdrLen:n])
		if err != nil {
			return 0, err
		}
		if ok {
			return at.Sub(t0), nil
		}
	}
}

// udpPayload is the payload of an untagged IPv4 or IPv6 (no extension
// header) UDP frame to dport.
func udpPayload(eth []byte, etherType uint16, dport int) ([]byte, bool) {
	if len(eth) < 14 || binary.BigEndian.Uint16(eth[12:]) != etherType {
		return nil, false
	}
	ip := eth[14:]
	var udp []byte
	switch etherType {
	case unix.ETH_P_IP:
		if len(ip) < 20 || ip[9] != unix.IPPROTO_UDP {
			return nil, false
		}
		ihl := int(ip[0]&0x0f) * 4
		if len(ip) < ihl {
			return nil, false
		}
		udp = ip[ihl:]
	case unix.ETH_P_IPV6:
		if len(ip) < 40 || ip[6] != unix.IPPROTO_UDP {
			return nil, false
		}
		udp = ip[40:]
	}
	if len(udp) < 8 || int(binary.BigEndian.Uint16(udp[2:])) != dport {
		return nil, false
	}
	return udp[8:], true
}
