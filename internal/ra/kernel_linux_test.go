package ra_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/internal/ra"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// The Linux IPv6 stack is the guest here: a veth pair in a fresh netns,
// g0 the guest's NIC with IPv6 on, p0 the port with IPv6 off, an AF_PACKET
// socket on p0 doing the agent's part. The kernel's own router
// solicitation must pass IsSolicitation and ValidChecksum; our
// advertisement, framed and checksummed as the agent will, must be taken:
// the prefix on-link and the MTU, and no default route and no SLAAC address.
// One with a wrong checksum must be dropped, or the check proves nothing.
func TestKernelGuest(t *testing.T) {
	harness.RequireRoot(t)
	n := harness.TestNetns(t, harness.RunID("tbt")+"-ra")
	err := n.Do(func(ns.NetNS) error {
		g0, err := setUpPair()
		if err != nil {
			return err
		}
		sock, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IPV6)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		defer unix.Close(sock)
		p0, err := netlink.LinkByName("p0")
		if err != nil {
			return err
		}
		if err := unix.Bind(sock, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: p0.Attrs().Index}); err != nil {
			return fmt.Errorf("bind packet socket: %w", err)
		}
		if err := netlink.LinkSetUp(p0); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(g0); err != nil {
			return err
		}
		if err := awaitSolicitation(sock, 10*time.Second); err != nil {
			return err
		}
		return advertise(sock, p0.Attrs().Index, g0)
	})
	if err != nil {
		t.Fatal(err)
	}
}

var guestMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// setUpPair makes p0 (the port, IPv6 off) and g0 (the guest, soliciting
// at once, no DAD wait) and leaves them down.
func setUpPair() (netlink.Link, error) {
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "p0", HardwareAddr: portMAC}, PeerName: "g0", PeerHardwareAddr: guestMAC}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("add veth: %w", err)
	}
	for path, v := range map[string]string{
		"net/ipv6/conf/p0/disable_ipv6":              "1",
		"net/ipv6/conf/g0/accept_ra":                 "1",
		"net/ipv6/conf/g0/accept_dad":                "0",
		"net/ipv6/conf/g0/router_solicitation_delay": "0",
	} {
		if err := os.WriteFile("/proc/sys/"+path, []byte(v), 0o644); err != nil {
			return nil, fmt.Errorf("sysctl %s: %w", path, err)
		}
	}
	return netlink.LinkByName("g0")
}

// awaitSolicitation reads p0 until the kernel's RS from g0 arrives and
// checks it the way the agent will.
func awaitSolicitation(sock int, within time.Duration) error {
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(sock, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	buf := make([]byte, 65536)
	for deadline := time.Now().Add(within); time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(sock, buf, 0)
		// ENETDOWN: reported once, for the link being down at bind time.
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENETDOWN) {
			continue
		}
		if err != nil {
			return fmt.Errorf("receive on p0: %w", err)
		}
		f := buf[:n]
		// Ethernet (14) + IPv6 (40) with ICMPv6 next; MLD reports carry a
		// hop-by-hop header and are skipped.
		if n < 14+40+4 || f[14+6] != 58 || f[14+40] != 133 {
			continue
		}
		src, _ := netip.AddrFromSlice(f[14+8 : 14+24])
		dst, _ := netip.AddrFromSlice(f[14+24 : 14+40])
		icmp := f[14+40 : 14+40+int(binary.BigEndian.Uint16(f[14+4:]))]
		if ok, r := ra.IsSolicitation(icmp); !ok {
			return fmt.Errorf("kernel's RS %x refused: %s", icmp, r)
		}
		if !ra.ValidChecksum(src, dst, icmp) {
			return fmt.Errorf("kernel's RS from %s to %s fails ValidChecksum: %x", src, dst, icmp)
		}
		return nil
	}
	return fmt.Errorf("no router solicitation from g0 within %s", within)
}

// advertise sends a corrupted and then a good advertisement from p0 and
// checks what g0's stack made of each.
func advertise(sock, ifindex int, g0 netlink.Link) error {
	msg, err := ra.Advertisement(ra.Params{Prefix: subnet, MTU: 1400, SourceMAC: portMAC})
	if err != nil {
		return err
	}
	routerLL, _ := netip.AddrFromSlice(harness.LinkLocal(portMAC))
	binary.BigEndian.PutUint16(msg[2:4], ra.Checksum(routerLL, allNodes, msg))
	bad := append([]byte{}, msg...)
	bad[3] ^= 0xff
	before, err := csumErrors()
	if err != nil {
		return err
	}
	to := &unix.SockaddrLinklayer{Ifindex: ifindex}
	if err := unix.Sendto(sock, frame(routerLL, bad), 0, to); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if err := waitFor(2*time.Second, func() error {
		after, err := csumErrors()
		if err == nil && after != before+1 {
			err = fmt.Errorf("Icmp6InCsumErrors %d -> %d, want one more", before, after)
		}
		return err
	}); err != nil {
		return fmt.Errorf("corrupted advertisement: %w", err)
	}
	if got := learned(g0, routerLL); got == nil {
		return errors.New("g0 took an advertisement with a wrong checksum")
	}
	if err := unix.Sendto(sock, frame(routerLL, msg), 0, to); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return waitFor(5*time.Second, func() error { return learned(g0, routerLL) })
}

// learned is nil once g0 has the on-link prefix route from the
// advertisement and its IPv6 MTU is 1400, and as long as it has no default
// route through the node (which does not forward) and has made no address
// in the prefix.
func learned(g0 netlink.Link, router netip.Addr) error {
	routes, err := netlink.RouteList(g0, unix.AF_INET6)
	if err != nil {
		return err
	}
	var onLink, dflt bool
	// Linux marks the default route proto ra and the prefix route proto
	// kernel; with no address of g0 in the prefix only the RA can have
	// made the latter.
	for _, r := range routes {
		onLink = onLink || r.Dst != nil && r.Dst.String() == subnet.String() && r.Gw == nil
		dflt = dflt || r.Protocol == unix.RTPROT_RA && (r.Dst == nil || r.Dst.String() == "::/0") && r.Gw.Equal(net.IP(router.AsSlice()))
	}
	if !onLink || dflt {
		return fmt.Errorf("routes from RA: on-link %s %v (want true), default via %s %v (want false)", subnet, onLink, router, dflt)
	}
	mtu, err := os.ReadFile("/proc/sys/net/ipv6/conf/g0/mtu")
	if err != nil || strings.TrimSpace(string(mtu)) != "1400" {
		return fmt.Errorf("g0 IPv6 MTU %q (%v), want 1400", mtu, err)
	}
	addrs, err := netlink.AddrList(g0, unix.AF_INET6)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if subnet.Contains(netip.MustParseAddr(a.IP.String())) {
			return fmt.Errorf("g0 made %s by SLAAC although A=0", a.IPNet)
		}
	}
	return nil
}

// frame is the IPv6 packet the agent's framing would send: from the port's
// link-local address to all nodes, hop limit 255 (RFC 4861 6.1.2).
func frame(src netip.Addr, icmp []byte) []byte {
	eth := append(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, portMAC...)
	eth = append(eth, 0x86, 0xdd)
	ip := []byte{0x60, 0, 0, 0, 0, 0, 58, 255}
	binary.BigEndian.PutUint16(ip[4:], uint16(len(icmp)))
	s, d := src.As16(), allNodes.As16()
	ip = append(append(ip, s[:]...), d[:]...)
	return append(append(eth, ip...), icmp...)
}

// csumErrors reads this netns's Icmp6InCsumErrors (thread-self: the test
// thread is the one in the netns, not the process).
func csumErrors() (int, error) {
	b, err := os.ReadFile("/proc/thread-self/net/snmp6")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "Icmp6InCsumErrors" {
			return strconv.Atoi(f[1])
		}
	}
	return 0, errors.New("no Icmp6InCsumErrors in snmp6")
}

func waitFor(d time.Duration, cond func() error) error {
	var err error
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err = cond(); err == nil {
			return nil
		}
	}
	return err
}
