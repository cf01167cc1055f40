// Package cluster simulates the data centre tapbridge is made for, inside
// network namespaces of its own: a "switch" netns holding one bridge, and
// N "node" netns, each with the admin's host bridge br-ext enslaving an
// uplink veth whose other end is a port of the switch. The nodes share one
// flat L2 and nothing else: no routes between subnets, no ip_forward, no
// address on any uplink.
//
// Pods are netns too. Every CNI verb goes through libcni, run inside the
// node's netns as kubelet's runtime would, with the conflists of
// conf/cni/<node>/ (their paths moved into the cluster's work dir so the
// plugin's dataDir, the IPAM data and the libcni cache are per node and
// removed with the cluster). Each node runs the node agent,
// tapbridge-agent, as its DaemonSet does on a node: in the node's netns, on
// the node's dataDir, with its /metrics inside that netns (agent.go).
// Guests boot with package guest on the TAP of their pod. Close removes
// every namespace, process and file it made.
package cluster

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

const (
	// HostBridge is the admin's bridge on every node, which enslaves the
	// uplink to the switch.
	HostBridge = "br-ext"
	// Uplink is the node end of the node's cable to the switch.
	Uplink = "uplink"
	// switchBridge is the "physical" switch.
	switchBridge = "sw0"
	// NetnsPrefix starts the name of every namespace a cluster makes.
	NetnsPrefix = "tbe"
)

// Options describe a cluster to build.
type Options struct {
	Nodes   int    // at least 2; nodes are named node1, node2, ...
	Plugin  string // the tapbridge-cni binary (harness.BuildPlugin)
	Agent   string // the tapbridge-agent binary (harness.BuildAgent); "": no agents
	ConfDir string // holds cni/<node>/<network>.conflist; default <repo>/conf
	WorkDir string // per-node state, IPAM, cache and logs; default a temp dir
}

// Cluster is a switch and its nodes.
type Cluster struct {
	ID     string // e.g. "tbe-1a2b3c4d", the prefix of every netns name
	Switch harness.Netns
	Nodes  []*Node

	opts    Options
	ownDir  bool // WorkDir was made by New and is removed by Close
	mu      sync.Mutex
	closers []func() error // run in reverse by Close
	api     *API           // set by StartAPI
}

// New builds the switch and the nodes. On error, whatever was built is
// removed again.
func New(opts Options) (*Cluster, error) {
	if opts.Nodes < 2 {
		return nil, fmt.Errorf("new cluster: %d nodes, want at least 2", opts.Nodes)
	}
	if opts.ConfDir == "" {
		opts.ConfDir = filepath.Join(harness.RepoRoot(), "conf")
	}
	c := &Cluster{ID: harness.RunID(NetnsPrefix), opts: opts}
	if c.opts.WorkDir == "" {
		dir, err := os.MkdirTemp("", c.ID+"-")
		if err != nil {
			return nil, fmt.Errorf("new cluster: %w", err)
		}
		c.opts.WorkDir, c.ownDir = dir, true
	}
	if err := c.build(); err != nil {
		return nil, errors.Join(fmt.Errorf("new cluster %s: %w", c.ID, err), c.Close())
	}
	return c, nil
}

func (c *Cluster) build() error {
	sw, err := c.newNetns("sw")
	if err != nil {
		return err
	}
	c.Switch = sw
	if err := sw.Do(setUpSwitch); err != nil {
		return err
	}
	for i := 1; i <= c.opts.Nodes; i++ {
		n, err := c.newNode(i)
		if err != nil {
			return err
		}
		c.Nodes = append(c.Nodes, n)
	}
	return nil
}

// newNetns makes "<ID>-<suffix>" and registers its removal.
func (c *Cluster) newNetns(suffix string) (harness.Netns, error) {
	ns, err := harness.NewNetns(c.ID + "-" + suffix)
	if err != nil {
		return harness.Netns{}, err
	}
	c.onClose(ns.Delete)
	return ns, nil
}

func (c *Cluster) onClose(fn func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closers = append(c.closers, fn)
}

// Close stops every guest, removes every namespace (pods first, then the
// nodes, then the switch) and the work dir. It is safe to call more than
// once and from a signal handler's goroutine.
func (c *Cluster) Close() error {
	c.mu.Lock()
	closers := c.closers
	c.closers = nil
	c.mu.Unlock()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		errs = append(errs, closers[i]())
	}
	if c.ownDir {
		errs = append(errs, os.RemoveAll(c.opts.WorkDir))
	}
	return errors.Join(errs...)
}

// Node returns the node called name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

func setUpSwitch() error {
	if err := linkUp("lo"); err != nil {
		return err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: switchBridge}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("add switch bridge: %w", err)
	}
	return netlink.LinkSetUp(br)
}

// cable plugs the node into the switch: a veth with the switch end
// ("port-<node>") enslaved to the switch bridge and the node end (Uplink)
// moved into the node netns. It runs in the switch netns.
func cable(node harness.Netns, nodeName string) func() error {
	return cableAs(node, nodeName, Uplink)
}

// cableAs is cable with the far end named end.
func cableAs(node harness.Netns, nodeName, end string) func() error {
	return func() error {
		target, err := netns.GetFromPath(node.Path())
		if err != nil {
			return fmt.Errorf("open netns %s: %w", node.Name, err)
		}
		defer target.Close()
		sw, err := netlink.LinkByName(switchBridge)
		if err != nil {
			return err
		}
		v := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: SwitchPort(nodeName), MasterIndex: sw.Attrs().Index},
			PeerName:      end,
			PeerNamespace: netlink.NsFd(int(target)),
		}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("add switch port for %s: %w", nodeName, err)
		}
		return netlink.LinkSetUp(v)
	}
}

// setUpHost builds what the admin of a node has made: br-ext, with an
// explicit MAC, enslaving the uplink. No address anywhere.
func setUpHost(mac net.HardwareAddr) error {
	if err := linkUp("lo"); err != nil {
		return err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: HostBridge, HardwareAddr: mac}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("add %s: %w", HostBridge, err)
	}
	up, err := netlink.LinkByName(Uplink)
	if err != nil {
		return fmt.Errorf("find uplink: %w", err)
	}
	if err := netlink.LinkSetMaster(up, br); err != nil {
		return fmt.Errorf("enslave uplink: %w", err)
	}
	if err := netlink.LinkSetUp(up); err != nil {
		return err
	}
	return netlink.LinkSetUp(br)
}

func linkUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}
