package cluster

import (
	"fmt"
	"net/netip"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// State reads what a node must get back to once its pods are gone (the
// harness's one model of node state): its links, tc filters, routes and
// nft tables, the addresses on br-ext, the IPAM leases and the plugin's
// records.
func (n *Node) State() (harness.State, error) {
	return n.StateWith()
}

// StateWith is State that also reads the pods' netns (those still there).
func (n *Node) StateWith(pods ...*Pod) (harness.State, error) {
	sc := harness.Scope{Host: n.NS, Bridges: []string{HostBridge}, StateDir: n.StateDir(), IPAMDir: n.IPAMDir()}
	for _, p := range pods {
		sc.Pods = append(sc.Pods, p.NS)
	}
	s, err := harness.Read(sc)
	if err != nil {
		return s, fmt.Errorf("read state of %s: %w", n.Name, err)
	}
	return s, nil
}

// HostAddrs lists the global addresses on the node's br-ext.
func (n *Node) HostAddrs() ([]netip.Prefix, error) {
	var addrs []netip.Prefix
	err := n.NS.Do(func() (err error) {
		addrs, err = harness.BridgeAddrs(HostBridge)
		return err
	})
	return addrs, err
}

// HostAddr is the node's address on subnet, if it has one.
func (n *Node) HostAddr(subnet netip.Prefix) (netip.Prefix, bool, error) {
	addrs, err := n.HostAddrs()
	if err != nil {
		return netip.Prefix{}, false, err
	}
	for _, a := range addrs {
		if a.Masked() == subnet.Masked() {
			return a, true, nil
		}
	}
	return netip.Prefix{}, false, nil
}
