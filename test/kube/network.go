package kube

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// The API server's netns holds a bridge at APIAddr; each simulated node
// joins it through a veth of its own. The test process itself reaches the
// API through sockets opened inside that netns (Dial), so nothing is added
// to the machine's root netns.
var (
	APIAddr   = netip.MustParseAddr("10.250.0.1")
	apiPrefix = 24
)

const (
	apiBridge = "kapi"
	nodeLink  = "kube0" // the node's end of its veth to the API netns
)

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// setUpAPINetns brings up lo and the bridge the nodes join.
func setUpAPINetns(n harness.Netns) error {
	for _, args := range [][]string{
		{"-n", n.Name, "link", "set", "lo", "up"},
		// A bridge without a MAC of its own takes its ports' lowest, so
		// each node joining or leaving would change it under the others'
		// ARP caches.
		{"-n", n.Name, "link", "add", apiBridge, "address", "02:00:00:00:fa:01", "type", "bridge"},
		{"-n", n.Name, "addr", "add", fmt.Sprintf("%s/%d", APIAddr, apiPrefix), "dev", apiBridge},
		{"-n", n.Name, "link", "set", apiBridge, "up"},
	} {
		if err := ipCmd(args...); err != nil {
			return err
		}
	}
	return nil
}

// JoinNode links netns node to the API netns as host number i (1..200):
// the veth is made inside the API netns and its peer moved straight into
// the node, so it never exists in the root netns.
func (c *Cluster) JoinNode(node harness.Netns, i int) (netip.Addr, error) {
	if i < 1 || i > 200 {
		return netip.Addr{}, fmt.Errorf("node number %d outside 1..200", i)
	}
	addr := netip.AddrFrom4([4]byte{10, 250, 0, byte(10 + i)})
	apiEnd := fmt.Sprintf("kn%d", i)
	for _, args := range [][]string{
		{"-n", c.Netns.Name, "link", "add", apiEnd, "type", "veth", "peer", "name", nodeLink, "netns", node.Name},
		{"-n", c.Netns.Name, "link", "set", apiEnd, "master", apiBridge, "up"},
		{"-n", node.Name, "link", "set", "lo", "up"},
		{"-n", node.Name, "addr", "add", fmt.Sprintf("%s/%d", addr, apiPrefix), "dev", nodeLink},
		{"-n", node.Name, "link", "set", nodeLink, "up"},
	} {
		if err := ipCmd(args...); err != nil {
			return netip.Addr{}, err
		}
	}
	return addr, nil
}

// Dial opens a TCP connection from inside the API netns; a socket stays
// in the netns it was made in, so the connection works from any thread.
func (c *Cluster) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	var conn net.Conn
	err := c.Netns.Do(func() error {
		var err error
		conn, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	return conn, err
}
