package main

import (
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// bridgeName is the admin's bridge on every simulated node.
const bridgeName = "br-ext"

// bench is what every section shares: the binaries, the run's names and
// temp dir, the control-plane node and its pods.
type bench struct {
	opts      options
	reg       *registry
	id        string // tbb-<8 hex>, the prefix of every namespace name
	dir       string
	tapbridge string
	alt       string // -alt build, if any
	cniBin    string // upstream plugins
	trivial   string
	skelFloor string // the minimal skel plugin (skelfloor)
	launcher  string
	node      harness.Netns
	pods      []harness.Netns
	cp        cpResults     // the control-plane batches, once run
	waited    time.Duration // spent in waitQuiet
}

func (b *bench) cniPath() string { return filepath.Dir(b.tapbridge) + ":" + b.cniBin }

func (b *bench) upstream(name string) string { return filepath.Join(b.cniBin, name) }

// newNode makes a node netns with br-ext (explicit MAC, up) and an uplink
// veth to a peer netns, like harness.Node: a neighbour on the flat L2.
func (b *bench) newNode(tag string, mac net.HardwareAddr) (harness.Netns, error) {
	node, err := b.reg.newNetns(b.id + "-" + tag)
	if err != nil {
		return node, err
	}
	peer, err := b.reg.newNetns(b.id + "-" + tag + "-peer")
	if err != nil {
		return node, err
	}
	err = inNS(node, func() error {
		br, err := addBridge(bridgeName, mac)
		if err != nil {
			return err
		}
		return addUplink(br, "uplink0", "eth0", peer)
	})
	if err != nil {
		return node, fmt.Errorf("set up node %s: %w", node.Name, err)
	}
	return node, inNS(peer, func() error { return linksUp("lo", "eth0") })
}

// addBridge creates an up bridge in the current netns (and sets lo up).
func addBridge(name string, mac net.HardwareAddr) (*netlink.Bridge, error) {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: mac}}
	if err := netlink.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("add bridge %s: %w", name, err)
	}
	return br, linksUp("lo", name)
}

// addUplink joins br to another netns with a veth: local end enslaved
// and up, far end named farName in far (left down: the caller decides).
func addUplink(br *netlink.Bridge, local, farName string, far harness.Netns) error {
	h, err := openNetns(far)
	if err != nil {
		return err
	}
	defer h.Close()
	v := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: local, MasterIndex: br.Index},
		PeerName:  farName, PeerNamespace: netlink.NsFd(int(h)),
	}
	if err := netlink.LinkAdd(v); err != nil {
		return fmt.Errorf("add veth %s: %w", local, err)
	}
	return linksUp(local)
}

func linksUp(names ...string) error {
	for _, name := range names {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", name, err)
		}
	}
	return nil
}

// ensurePods grows the pool of pod namespaces to n. Pods are reused: every
// section DELs what it ADDs, which leaves a pod netns empty again.
func (b *bench) ensurePods(n int) error {
	for i := len(b.pods); i < n; i++ {
		p, err := b.reg.newNetns(fmt.Sprintf("%s-pod%04d", b.id, i))
		if err != nil {
			return err
		}
		b.pods = append(b.pods, p)
	}
	return nil
}
