package arp

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// ownedIPv4 is the address the fixture gives B, the host that owns it.
var ownedIPv4 = &net.IPNet{IP: net.ParseIP("192.0.2.7"), Mask: net.CIDRMask(24, 32)}

// segment is two network namespaces joined by a veth pair: A (link a0) does
// the probing, B (link b0) owns 192.0.2.7/24. A has no address at all, not
// even an IPv6 link-local one.
type segment struct {
	a, b   ns.NetNS
	aIndex int // ifindex of a0 in A
	bIndex int // ifindex of b0 in B
}

func newSegment(t *testing.T) *segment {
	t.Helper()
	harness.RequireRoot(t)
	prefix := "tba-" + randomHex(t, 4)
	s := &segment{a: harness.TestNetns(t, prefix+"-a"), b: harness.TestNetns(t, prefix+"-b")}
	if err := s.a.Do(func(ns.NetNS) error { return s.setUpA() }); err != nil {
		t.Fatalf("set up netns A: %v", err)
	}
	if err := s.b.Do(func(ns.NetNS) error { return s.setUpB() }); err != nil {
		t.Fatalf("set up netns B: %v", err)
	}
	return s
}

// setUpA runs in A: it creates the veth pair with its peer directly in B,
// so nothing is ever created in the root namespace.
func (s *segment) setUpA() error {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "a0"},
		PeerName:      "b0",
		PeerNamespace: netlink.NsFd(int(s.b.Fd())),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth: %w", err)
	}
	a0, err := netlink.LinkByName("a0")
	if err != nil {
		return err
	}
	// No link-local address either: the probe must not need any address.
	if err := netlink.LinkSetIP6AddrGenMode(a0, nl.IN6_ADDR_GEN_MODE_NONE); err != nil {
		return fmt.Errorf("addrgenmode none: %w", err)
	}
	if err := netlink.LinkSetUp(a0); err != nil {
		return err
	}
	s.aIndex = a0.Attrs().Index
	return nil
}

// setUpB runs in B: it brings b0 up and gives it the owned address.
func (s *segment) setUpB() error {
	b0, err := netlink.LinkByName("b0")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(b0); err != nil {
		return err
	}
	if err := netlink.AddrAdd(b0, &netlink.Addr{IPNet: ownedIPv4}); err != nil {
		return fmt.Errorf("add %s: %w", ownedIPv4, err)
	}
	s.bIndex = b0.Attrs().Index
	return nil
}

// addrsOfA lists the addresses on a0, to show the test that A has none.
func (s *segment) addrsOfA() ([]netlink.Addr, error) {
	var addrs []netlink.Addr
	err := s.a.Do(func(ns.NetNS) error {
		a0, err := netlink.LinkByIndex(s.aIndex)
		if err != nil {
			return err
		}
		addrs, err = netlink.AddrList(a0, netlink.FAMILY_ALL)
		return err
	})
	return addrs, err
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
