package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/containernetworking/cni/libcni"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// PluginType is the "type" of tapbridge in a conflist.
const PluginType = "tapbridge-cni"

// Node is a simulated host: its netns holds br-ext and the uplink, and
// every CNI call for its pods runs there, with its own dirs.
type Node struct {
	Name string // "node1", ...; also the hostAddress.nodeName
	NS   harness.Netns
	Dir  string // state/, ipam/, cache/ and plugin.log

	c     *Cluster
	cni   *libcni.CNIConfig
	mu    sync.Mutex
	nets  map[string]*libcni.NetworkConfigList
	seq   int
	agent *agent // nil while none runs
}

func (c *Cluster) newNode(i int) (*Node, error) {
	name := "node" + strconv.Itoa(i)
	ns, err := c.newNetns(name)
	if err != nil {
		return nil, err
	}
	n := &Node{Name: name, NS: ns, Dir: filepath.Join(c.opts.WorkDir, name), c: c, nets: map[string]*libcni.NetworkConfigList{}}
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create node dir: %w", err)
	}
	if err := c.Switch.Do(cable(ns, name)); err != nil {
		return nil, err
	}
	mac := net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0xee, byte(i)}
	if err := ns.Do(func() error { return setUpHost(mac) }); err != nil {
		return nil, fmt.Errorf("set up %s: %w", name, err)
	}
	paths := []string{filepath.Dir(c.opts.Plugin), harness.CNIBinDir()}
	n.cni = libcni.NewCNIConfigWithCacheDir(paths, n.CacheDir(), nil)
	if c.opts.Agent != "" {
		// Killed before the node's netns goes (closers run in reverse).
		c.onClose(n.KillAgent)
		if err := n.StartAgent(context.Background()); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// StateDir is the plugin's dataDir on this node.
func (n *Node) StateDir() string { return filepath.Join(n.Dir, "state") }

// IPAMDir is host-local's dataDir on this node.
func (n *Node) IPAMDir() string { return filepath.Join(n.Dir, "ipam") }

// CacheDir is libcni's cache on this node.
func (n *Node) CacheDir() string { return filepath.Join(n.Dir, "cache") }

// LogFile is where the plugin logs on this node.
func (n *Node) LogFile() string { return filepath.Join(n.Dir, "plugin.log") }

// ConflistPath is the node's copy of network in the conf dir.
func (n *Node) ConflistPath(network string) string {
	return filepath.Join(n.c.opts.ConfDir, "cni", n.Name, network+".conflist")
}

// Network returns the node's conflist for network, loading it from the
// conf dir the first time.
func (n *Node) Network(network string) (*libcni.NetworkConfigList, error) {
	n.mu.Lock()
	l, ok := n.nets[network]
	n.mu.Unlock()
	if ok {
		return l, nil
	}
	b, err := os.ReadFile(n.ConflistPath(network))
	if err != nil {
		return nil, fmt.Errorf("load network %s on %s: %w", network, n.Name, err)
	}
	return n.SetNetwork(network, b)
}

// SetNetwork registers a conflist under key (which tests use to run a
// variant of a network, e.g. with a multi-queue TAP), after moving its
// paths into the node's dirs.
func (n *Node) SetNetwork(key string, conflist []byte) (*libcni.NetworkConfigList, error) {
	b, err := n.localize(conflist)
	if err != nil {
		return nil, fmt.Errorf("network %s on %s: %w", key, n.Name, err)
	}
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("network %s on %s: %w", key, n.Name, err)
	}
	n.mu.Lock()
	n.nets[key] = l
	n.mu.Unlock()
	return l, nil
}

// localize points the conflist's dataDir, logFile, IPAM dataDir and node
// name at this node (and tapbridge-ipam at the cluster's API server): on
// a real node they are the defaults and the hostname, but the simulated
// nodes share one filesystem and hostname.
func (n *Node) localize(conflist []byte) ([]byte, error) {
	var list map[string]any
	if err := json.Unmarshal(conflist, &list); err != nil {
		return nil, err
	}
	plugins, _ := list["plugins"].([]any)
	for _, p := range plugins {
		plugin, _ := p.(map[string]any)
		if plugin["type"] != PluginType {
			continue
		}
		plugin["dataDir"], plugin["logFile"], plugin["logLevel"] = n.StateDir(), n.LogFile(), "debug"
		host, _ := plugin["hostAddress"].(map[string]any)
		if host == nil {
			host = map[string]any{}
			plugin["hostAddress"] = host
		}
		host["nodeName"] = n.Name
		ipam, _ := plugin["ipam"].(map[string]any)
		switch {
		case ipam == nil:
		case ipam["type"] == "host-local":
			ipam["dataDir"] = n.IPAMDir()
		case ipam["type"] == IPAMType:
			// Its store is the API: the node's kubeconfig, and the node's
			// name for its users (the nodes share one hostname).
			ipam["nodeName"] = n.Name
			api := n.c.API()
			if api == nil {
				// Without it the IPAM would read the host's default
				// kubeconfig path: refuse rather than reach outside.
				return nil, fmt.Errorf("network %v uses %s: start the cluster's API server (StartAPI) before registering it", list["name"], IPAMType)
			}
			ipam["kubeconfig"] = api.Kubeconfig
		}
	}
	return json.Marshal(list)
}

// Status runs STATUS for network through libcni.
func (n *Node) Status(ctx context.Context, network string) error {
	l, err := n.Network(network)
	if err != nil {
		return err
	}
	return n.NS.Do(func() error { return n.cni.GetStatusNetworkList(ctx, l) })
}

// GC runs GC for network through libcni, as a runtime does: every pod of
// the node on that network not in valid is stale.
func (n *Node) GC(ctx context.Context, network string, valid []*Pod) error {
	l, err := n.Network(network)
	if err != nil {
		return err
	}
	args := &libcni.GCArgs{}
	for _, p := range valid {
		args.ValidAttachments = append(args.ValidAttachments, p.attachment())
	}
	return n.NS.Do(func() error { return n.cni.GCNetworkList(ctx, l, args) })
}
