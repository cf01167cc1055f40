// Command demo shows tapbridge-cni's flat L2 with real VMs, on one machine
// and without Kubernetes (`make demo`, as root):
//
//  1. builds the plugin, fetches the upstream IPAM plugins and the guest
//     image if missing;
//  2. builds a simulated cluster in network namespaces (package cluster):
//     a switch, node1 and node2, each with its br-ext on the switch and
//     the node agent, tapbridge-agent, run as its DaemonSet would;
//  3. attaches 4 VM pods through libcni with the conflists of conf/cni,
//     one per (node, subnet), both networks served by the node agent:
//     vmnet3-dhcp (172.16.3.0/24 and fd00:3::/64, static host addresses)
//     and vmnet13 (172.16.13.0/24, host addresses from a pool; "dhcp"
//     turned on here), and boots a QEMU guest on each pod's TAP with no
//     address on its kernel command line: its DHCP clients (busybox
//     udhcpc, Debian's dhclient -6) get them from the agent;
//  4. prints the topology, where each guest's addresses came from, and a
//     connectivity matrix: every VM and every node host address to every
//     other, IPv4 and IPv6, with ICMP and TCP;
//  5. live-migrates a fifth VM (MAC and address pinned) from node1 to
//     node2 while a peer on the switch, both nodes and vm3 ping it and a
//     TCP connection to it stays open, and prints the downtime they saw
//     (migrate.go);
//  6. DELs everything and shows each node back to what it was.
//
// Nothing is done in the machine's root network namespace. Ctrl-C at any
// point stops the guests and removes every namespace and file it made.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/e2e/cluster"
	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// demo holds the run's state, so teardown can undo whatever exists.
type demo struct {
	start    time.Time
	tmp      string
	plugin   string
	agent    string
	image    guest.Image
	c        *cluster.Cluster
	pods     []*cluster.Pod
	vms      map[*cluster.Pod]*cluster.VM
	baseline map[string]harness.State
	failed   int // applicable pairs of the matrix that did not answer

	pinned         string        // key of vmnet3's pinned variant (migrate.go)
	migGuest       cluster.Guest // how the migrating VM was booted
	node1BeforeMig harness.State // node1 before the migrating VM came
}

func main() {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: run as root: it creates network namespaces and TAP devices and runs QEMU as uid 107")
		os.Exit(1)
	}
	// Signals cancel ctx; they stay caught until teardown is over, so a
	// second Ctrl-C cannot cut the cleanup short.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	d := &demo{start: time.Now(), vms: map[*cluster.Pod]*cluster.VM{}, baseline: map[string]harness.State{}}
	err := d.run(ctx)
	interrupted := ctx.Err() != nil
	if interrupted {
		d.say("interrupted: stopping the guests and removing everything")
		err = nil // the cancellation itself is no failure to report
	}
	err = errors.Join(err, d.teardown())
	stop()
	if interrupted {
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo: cleanup:", err)
		}
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	d.say("done")
}

func (d *demo) say(format string, a ...any) {
	fmt.Printf("[%5.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, a...))
}

func (d *demo) run(ctx context.Context) error {
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"prepare", d.prepare},
		{"build the cluster", d.build},
		{"attach the VM pods", d.attach},
		{"boot the guests", d.boot},
		{"probe", d.probe},
		{"live migration", d.migrate},
		{"delete the pods", d.deleteAll},
	}
	for _, s := range steps {
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if d.failed > 0 {
		return fmt.Errorf("%d pairs of the matrix did not answer", d.failed)
	}
	return nil
}

func (d *demo) prepare(ctx context.Context) error {
	var err error
	if d.tmp, err = os.MkdirTemp("", "tapbridge-demo-"); err != nil {
		return err
	}
	d.say("building tapbridge-cni")
	if d.plugin, err = harness.BuildPlugin(filepath.Join(d.tmp, "bin"), ""); err != nil {
		return err
	}
	d.say("building tapbridge-agent")
	if d.agent, err = harness.BuildAgent(filepath.Join(d.tmp, "agent")); err != nil {
		return err
	}
	d.say("upstream IPAM plugins %s (host-local) in %s", harness.UpstreamVersion, harness.CNIBinDir())
	if err := harness.EnsureUpstream(); err != nil {
		return err
	}
	d.say("guest image (built once with apt-get and busybox, then cached)")
	d.image, err = guest.EnsureImage(ctx, "")
	return err
}

func (d *demo) build(ctx context.Context) error {
	c, err := cluster.New(cluster.Options{Nodes: 2, Plugin: d.plugin, Agent: d.agent, WorkDir: filepath.Join(d.tmp, "cluster")})
	if err != nil {
		return err
	}
	d.c = c
	d.say("cluster %s: switch %s-sw; node1, node2 each with %s enslaving an uplink to the switch, and tapbridge-agent (pids %d, %d) in its netns on its dataDir",
		c.ID, c.ID, cluster.HostBridge, c.Nodes[0].AgentPID(), c.Nodes[1].AgentPID())
	for _, n := range c.Nodes {
		if err := served(n); err != nil {
			return err
		}
		if err := n.ServeEcho(); err != nil {
			return err
		}
		s, err := n.State()
		if err != nil {
			return err
		}
		d.baseline[n.Name] = s
		for _, net := range []string{"vmnet3-dhcp", "vmnet13"} {
			if err := n.Status(ctx, net); err != nil {
				return fmt.Errorf("STATUS %s on %s: %w", net, n.Name, err)
			}
		}
	}
	return nil
}

// served registers on n the demo's networks, both served by the node
// agent: conf/cni's vmnet3-dhcp (vmnet3's subnet, dual-stack, "dhcp":
// {"enabled": true}) as shipped, and vmnet13 with "dhcp" turned on (the
// shipped vmnet13 leaves the guest's address to the guest).
func served(n *cluster.Node) error {
	if _, err := n.Network("vmnet3-dhcp"); err != nil {
		return err
	}
	_, err := n.Variant("vmnet13", "vmnet13", cluster.Serve(""))
	return err
}

// plan is which VM goes where, in boot order: node1's VMs boot first (two
// at a time, one per core), so they wait for node2's before probing.
var plan = []struct{ name, node, network string }{
	{"vm1", "node1", "vmnet3-dhcp"},
	{"vm2", "node1", "vmnet13"},
	{"vm3", "node2", "vmnet3-dhcp"},
	{"vm4", "node2", "vmnet13"},
}

func (d *demo) attach(ctx context.Context) error {
	for _, p := range plan {
		pod, err := d.c.Node(p.node).AddPod(ctx, p.network, p.name)
		if err != nil {
			return err
		}
		d.pods = append(d.pods, pod)
		ip := pod.IP.String()
		if pod.IP6.IsValid() {
			ip += " and " + pod.IP6.String()
		}
		d.say("ADD %s on %s (%s): IPAM gave %s, MAC %s, TAP %s in %s", pod.Name, p.node, p.network, ip, pod.MAC, pod.Tap, pod.NS.Name)
	}
	return nil
}

// teardown undoes whatever run got to, without the (maybe cancelled)
// run context: guests, pods, namespaces, files.
func (d *demo) teardown() error {
	var errs []error
	if d.c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for _, p := range d.pods {
			errs = append(errs, d.delPod(ctx, p))
		}
		errs = append(errs, d.c.Close())
		if left := leftNetns(d.c.ID); len(left) > 0 {
			errs = append(errs, fmt.Errorf("namespaces left behind: %v", left))
		} else {
			d.say("removed every namespace of %s", d.c.ID)
		}
	}
	if d.tmp != "" {
		errs = append(errs, os.RemoveAll(d.tmp))
	}
	return errors.Join(errs...)
}

// delPod stops the pod's guest, DELs the attachment and removes the pod
// netns, as a runtime does when a VM pod ends.
func (d *demo) delPod(ctx context.Context, p *cluster.Pod) error {
	if vm := d.vms[p]; vm != nil {
		_ = vm.Stop()
	}
	if _, err := os.Stat(p.NS.Path()); os.IsNotExist(err) {
		return nil // already deleted
	}
	return errors.Join(p.Del(ctx), p.Remove())
}

// forget drops a pod that is gone from the ones teardown deletes.
func (d *demo) forget(p *cluster.Pod) {
	for i, q := range d.pods {
		if q == p {
			d.pods = append(d.pods[:i], d.pods[i+1:]...)
			return
		}
	}
}

func leftNetns(id string) []string {
	entries, _ := os.ReadDir(harness.NetnsDir)
	var left []string
	for _, e := range entries {
		if len(e.Name()) >= len(id) && e.Name()[:len(id)] == id {
			left = append(left, e.Name())
		}
	}
	return left
}
