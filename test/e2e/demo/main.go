// Command demo shows tapbridge-cni's flat L2 with real VMs, on one machine
// and without Kubernetes (`make demo`, as root):
//
//  1. builds the plugin, the node agent and tapbridge-ipam, fetches the
//     upstream IPAM plugins and the guest image if missing; it needs
//     build/kube (kube-apiserver and kubectl, scripts/deps/kube.sh) and
//     says so and stops when that is missing;
//  2. builds a simulated cluster in network namespaces (package cluster):
//     a switch, node1 and node2, each with its br-ext on the switch and
//     the node agent, tapbridge-agent, run as its DaemonSet would, and a
//     real kube-apiserver and etcd in a netns of their own that both
//     nodes reach, with the project's CRDs and RBAC applied;
//  3. attaches 4 VM pods through libcni, one per (node, subnet), both
//     networks served by the node agent: vmnet3-dhcp of conf/cni
//     (172.16.3.0/24 and fd00:3::/64, host-local, static host addresses)
//     and vmnet13-persistent, the NAD of conf/k8s/nad-tapbridge-ipam.yaml
//     (172.16.13.0/24, tapbridge-ipam, allowPersistentIPs, host
//     addresses from a pool; "dhcp" turned on here), whose VMs each have
//     an IPAMClaim and a virt-launcher pod in the API naming it, as the
//     kubevirt-ipam-controller and KubeVirt make them (claims.go); it
//     boots a QEMU guest on each pod's TAP with no address on its kernel
//     command line: its DHCP clients (busybox udhcpc, Debian's dhclient
//     -6) get them from the agent;
//  4. prints the topology, where each guest's addresses came from, and a
//     connectivity matrix: every VM and every node host address to every
//     other, IPv4 and IPv6, with ICMP and TCP;
//  5. re-creates vm4's pod (DEL, pod deleted, a new pod and sandbox,
//     ADD, the guest booted again): it gets its claim's address again;
//  6. live-migrates a fifth VM (its MAC pinned, its address its claim's)
//     from node1 to node2 while a peer on the switch, both nodes and vm4
//     ping it and a TCP connection to it stays open, and prints the
//     downtime they saw (migrate.go); the target gets the source's
//     address, which stays after the source's DEL;
//  7. DELs everything and shows each node back to what it was, and the
//     claims' addresses kept until the claims are deleted.
//
// Nothing is done in the machine's root network namespace. Ctrl-C at any
// point stops the guests and the API server and removes every namespace
// and file it made.
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
	"github.com/tapbridge/tapbridge-cni/test/kube"
)

// demo holds the run's state, so teardown can undo whatever exists.
type demo struct {
	start    time.Time
	tmp      string
	plugin   string
	agent    string
	api      *cluster.API
	image    guest.Image
	c        *cluster.Cluster
	pods     []*cluster.Pod
	vms      map[*cluster.Pod]*cluster.VM
	baseline map[string]harness.State
	failed   int // applicable pairs of the matrix that did not answer

	claims         []vmClaim     // the IPAMClaims made, in order (claims.go)
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
		{"delete the claims", d.releaseClaims},
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
	// Checked first: without it the demo would fail minutes later.
	if err := kube.CheckBinaries(); err != nil {
		return fmt.Errorf("the demo runs tapbridge-ipam on a real kube-apiserver: %w", err)
	}
	if d.tmp, err = os.MkdirTemp("", "tapbridge-demo-"); err != nil {
		return err
	}
	d.say("building tapbridge-cni and tapbridge-ipam (both in the nodes' CNI_PATH)")
	if d.plugin, err = harness.BuildPlugin(filepath.Join(d.tmp, "bin"), ""); err != nil {
		return err
	}
	if _, err = harness.BuildIPAM(filepath.Join(d.tmp, "bin")); err != nil {
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
	if err := d.startAPI(ctx); err != nil {
		return err
	}
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
		for _, net := range []string{"vmnet3-dhcp", persistentNet} {
			if err := n.Status(ctx, net); err != nil {
				return fmt.Errorf("STATUS %s on %s: %w", net, n.Name, err)
			}
		}
	}
	return nil
}

// served registers on n the demo's networks, both served by the node
// agent: conf/cni's vmnet3-dhcp (vmnet3's subnet, dual-stack, "dhcp":
// {"enabled": true}) as shipped, and the NAD vmnet13-persistent of
// conf/k8s (tapbridge-ipam, allowPersistentIPs) with "dhcp" turned on
// (the shipped NAD leaves the guest's address to the guest). The
// cluster points its IPAM at the sandbox's API server and node name.
func served(n *cluster.Node) error {
	if _, err := n.Network("vmnet3-dhcp"); err != nil {
		return err
	}
	conf, err := kube.NADConfig(persistentNADFile, persistentNet)
	if err != nil {
		return err
	}
	_, err = n.VariantOf(conf, persistentNet, cluster.Serve(""))
	return err
}

// plan is which VM goes where, in boot order: node1's VMs boot first (two
// at a time, one per core), so they wait for node2's before probing.
var plan = []struct{ name, node, network string }{
	{"vm1", "node1", "vmnet3-dhcp"},
	{"vm2", "node1", persistentNet},
	{"vm3", "node2", "vmnet3-dhcp"},
	{"vm4", "node2", persistentNet},
}

func (d *demo) attach(ctx context.Context) error {
	for _, p := range plan {
		var pod *cluster.Pod
		var err error
		if p.network == persistentNet {
			pod, err = d.addVM(ctx, p.node, p.name, p.name, cluster.PodOptions{})
		} else if pod, err = d.c.Node(p.node).AddPod(ctx, p.network, p.name); err == nil {
			d.pods = append(d.pods, pod)
		}
		if err != nil {
			return err
		}
		ip := pod.IP.String()
		if pod.IP6.IsValid() {
			ip += " and " + pod.IP6.String()
		}
		d.say("ADD %s on %s (%s): %s gave %s, MAC %s, TAP %s in %s", pod.Name, p.node, p.network, ipamOf(p.network), ip, pod.MAC, pod.Tap, pod.NS.Name)
	}
	return nil
}

func ipamOf(network string) string {
	if network == persistentNet {
		return "tapbridge-ipam (its IPAMClaim)"
	}
	return "host-local"
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
		if d.api != nil {
			d.say("stopped kube-apiserver and etcd (by PID, each waited for)")
		}
		if left := leftNetns(d.c.ID); len(left) > 0 {
			errs = append(errs, fmt.Errorf("namespaces left behind: %v", left))
		} else {
			d.say("removed every namespace of %s (nodes, pods, switch, API server)", d.c.ID)
		}
	}
	if d.tmp != "" {
		errs = append(errs, os.RemoveAll(d.tmp))
	}
	return errors.Join(errs...)
}

// delPod stops the pod's guest, DELs the attachment and removes the pod
// netns, as a runtime does when a VM pod ends, then the pod object of a
// VM with a claim, as the API server does once kubelet is done.
func (d *demo) delPod(ctx context.Context, p *cluster.Pod) error {
	if vm := d.vms[p]; vm != nil {
		_ = vm.Stop()
	}
	if _, err := os.Stat(p.NS.Path()); os.IsNotExist(err) {
		return nil // already deleted
	}
	err := errors.Join(p.Del(ctx), p.Remove())
	if p.Network == persistentNet {
		err = errors.Join(err, d.api.RemoveLauncher(ctx, p))
	}
	return err
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
