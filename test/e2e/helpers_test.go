package e2e

import (
	"context"
	"io"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/e2e/cluster"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// Subnets and host addresses of the conflists in conf/cni.
var (
	subnet3    = netip.MustParsePrefix("172.16.3.0/24")  // vmnet3: hostAddress.static
	subnet13   = netip.MustParsePrefix("172.16.13.0/24") // vmnet13: hostAddress.pool
	pool13     = netip.MustParsePrefix("172.16.13.240/28")
	static3    = map[string]netip.Prefix{"node1": netip.MustParsePrefix("172.16.3.150/24"), "node2": netip.MustParsePrefix("172.16.3.151/24")}
	netSubnets = map[string]netip.Prefix{"vmnet3": subnet3, "vmnet13": subnet13}
)

// Every wait is bounded; TCG boots take 5-10 s on 2 cores.
const testTimeout = 5 * time.Minute

// newCluster builds a 2-node cluster whose nodes run the node agent and
// answer TCP echo, removed (with every guest, agent and namespace) when
// the test ends.
func newCluster(t *testing.T) *cluster.Cluster {
	t.Helper()
	c, err := cluster.New(cluster.Options{Nodes: 2, Plugin: pluginPath, Agent: agentPath, WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				if b, err := os.ReadFile(n.LogFile()); err == nil {
					t.Logf("plugin log of %s:\n%s", n.Name, b)
				}
				if b, err := os.ReadFile(n.AgentLogFile()); err == nil {
					t.Logf("agent log of %s:\n%s", n.Name, b)
				}
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
		checkNoNetns(t, c.ID)
	})
	for _, n := range c.Nodes {
		if err := n.ServeEcho(); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// checkNoNetns fails if a namespace of the cluster survived Close.
func checkNoNetns(t *testing.T, id string) {
	t.Helper()
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), id) {
			t.Errorf("netns %s left behind", e.Name())
		}
	}
}

func addPod(ctx context.Context, t *testing.T, n *cluster.Node, network, name string) *cluster.Pod {
	t.Helper()
	p, err := n.AddPod(ctx, network, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ADD %s: tap %s, mac %s", p, p.Tap, p.MAC)
	return p
}

func state(t *testing.T, n *cluster.Node) harness.State {
	t.Helper()
	s, err := n.State()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hostAddr returns the node's address on subnet, failing if it has none.
func hostAddr(t *testing.T, n *cluster.Node, subnet netip.Prefix) netip.Prefix {
	t.Helper()
	a, ok, err := n.HostAddr(subnet)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("%s has no host address on %s", n.Name, subnet)
	}
	return a
}

func expectNoHostAddr(t *testing.T, n *cluster.Node, subnet netip.Prefix) {
	t.Helper()
	if a, ok, err := n.HostAddr(subnet); err != nil || ok {
		t.Errorf("%s still has host address %s on %s (err %v)", n.Name, a, subnet, err)
	}
}

// reach checks ICMP and TCP from node n (source: its host address on the
// VM's subnet) to the guest.
func reach(ctx context.Context, t *testing.T, n *cluster.Node, p *cluster.Pod) {
	t.Helper()
	src := hostAddr(t, n, p.IP.Masked())
	rtt, err := n.Reach(ctx, src.Addr(), p.IP.Addr(), 30*time.Second)
	if err != nil {
		t.Errorf("%s -> %s: %v", n.Name, p, err)
		return
	}
	t.Logf("%s (%s) -> %s: ping %v, tcp echo ok", n.Name, src.Addr(), p, rtt)
}

// bootGuests boots the guests two at a time and shows the serial consoles
// of all of them if the test fails (TBE2E_CONSOLE=1 streams them).
func bootGuests(ctx context.Context, t *testing.T, c *cluster.Cluster, guests []cluster.Guest) []*cluster.VM {
	t.Helper()
	for i := range guests {
		guests[i].Retry = 90 * time.Second // boots slow down a lot on a busy machine
		if os.Getenv("TBE2E_CONSOLE") != "" {
			guests[i].Console = prefixWriter{w: os.Stderr, prefix: guests[i].Pod.Name + "| "}
		}
	}
	vms, err := c.BootAll(ctx, image, guests, 2, 0, func(e cluster.BootEvent) {
		if e.VM != nil {
			t.Logf("guest %s ready after %v", e.Guest.Pod, e.Elapsed.Round(time.Millisecond))
		}
	})
	t.Cleanup(func() {
		for _, vm := range vms {
			if vm == nil {
				continue
			}
			if t.Failed() {
				t.Logf("serial console of %s:\n%s", vm.Pod.Name, vm.Output())
			}
			if strings.Contains(vm.Output(), "TBERROR") {
				t.Errorf("guest %s reported errors", vm.Pod.Name)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return vms
}

// expectProbes waits for the guest's probes and requires each of want
// ("ping <ip>", "tcp <ip>:7777") to have succeeded.
func expectProbes(ctx context.Context, t *testing.T, vm *cluster.VM, want ...string) {
	t.Helper()
	got, err := vm.Probes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		p, ok := got[w]
		switch {
		case !ok:
			t.Errorf("%s: no result for %q", vm.Pod.Name, w)
		case !p.OK:
			t.Errorf("%s: %s", vm.Pod.Name, p.Line)
		default:
			t.Logf("%s: %s", vm.Pod.Name, p.Line)
		}
	}
}

type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, p.prefix+string(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}
