package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/tapbridge/tapbridge-cni/test/e2e/cluster"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// hostAddressSource says where each network's host addresses come from,
// as configured in conf/cni/<node>/<network>.conflist and the NAD.
var hostAddressSource = map[string]string{"vmnet3-dhcp": "hostAddress.static", persistentNet: "hostAddress.pool"}

func (d *demo) printTopology(all []endpoint) {
	fmt.Printf("\nTopology: one flat L2 (switch %s-sw), no router, no ip_forward, no address on any uplink\n", d.c.ID)
	for _, n := range d.c.Nodes {
		var addrs []string
		for _, e := range all {
			if e.pod == nil && e.node == n {
				addrs = append(addrs, fmt.Sprintf("%s/%d (%s)", e.addr, e.subnet.Bits(), d.sourceOf(e.subnet)))
			}
		}
		fmt.Printf("  %s  %s + uplink  host addresses: %s\n", n.Name, cluster.HostBridge, strings.Join(addrs, ", "))
		for _, p := range d.pods {
			if p.Node == n {
				fmt.Printf("    %-4s %-18s %-16s MAC %s  %s/%s  (host veth %s)\n", p.Name, p.Network, p.IP, p.MAC, p.IfName, p.Tap, p.HostIf)
				if c := d.claim(p.Name); c != nil {
					fmt.Printf("         pod %s/%s, IPAMClaim %s (ipam-claim-reference of its network-selection element)\n", vmNamespace, p.Object().Name, c.name)
				}
				fmt.Printf("         %s\n", d.addrSource(p))
			}
		}
	}
}

func (d *demo) sourceOf(subnet netip.Prefix) string {
	for _, p := range d.pods {
		if p.IP.Masked() == subnet || (p.IP6.IsValid() && p.IP6.Masked() == subnet) {
			return hostAddressSource[p.Network]
		}
	}
	return "?"
}

// addrSource says where the guest's addresses came from, as its DHCP
// clients printed it, and whether they are its IPAM result (counted as a
// failure if not).
func (d *demo) addrSource(p *cluster.Pod) string {
	vm := d.vms[p]
	if vm == nil {
		return "not booted"
	}
	got := vm.Got
	server := map[int]string{}
	for _, l := range vm.Leases() {
		server[l.Family] = l.Server
	}
	parts := []string{fmt.Sprintf("%s by %s (server %s)", got.IP, got.From4, server[4])}
	ok := got.IP == p.IP
	if p.IP6.IsValid() {
		parts = append(parts, fmt.Sprintf("%s by %s (server DUID %s)", got.IP6, got.From6, server[6]))
		ok = ok && got.IP6.Addr() == p.IP6.Addr()
		for _, l := range vm.Lines() {
			if i := strings.Index(l, "TBRA on-link "); i >= 0 {
				parts = append(parts, l[i+len("TBRA on-link "):]+" on-link by the agent's router advertisement")
			}
		}
	}
	verdict := "✓ exactly its IPAM result"
	if !ok {
		d.failed++
		verdict = "✗ NOT its IPAM result"
	}
	return "got " + strings.Join(parts, ", ") + ": " + verdict
}

const labelWidth, cellWidth = 22, 15

// printMatrix prints rows = sources, columns = destinations.
func (d *demo) printMatrix(all []endpoint, m map[[2]netip.Addr]cell) {
	fmt.Printf("\nConnectivity: ✓ = ICMP echo and TCP echo (port %d) both answered, with the ping round trip\n", cluster.EchoPort)
	fmt.Println("rows are sources (a VM probes from inside its guest; a node from its netns, from that host address)")
	var head1, head2 strings.Builder
	head1.WriteString(pad("from \\ to", labelWidth))
	head2.WriteString(pad("", labelWidth))
	for _, dst := range all {
		head1.WriteString(pad(dst.name, cellWidth))
		head2.WriteString(pad(dst.addr.String(), cellWidth))
	}
	fmt.Println(head1.String())
	fmt.Println(head2.String())
	for _, src := range all {
		var row strings.Builder
		row.WriteString(pad(src.name+" "+src.addr.String(), labelWidth))
		for _, dst := range all {
			row.WriteString(pad(cellText(src, dst, m), cellWidth))
		}
		fmt.Println(row.String())
	}
	fmt.Println("– = different subnets: nothing routes between 172.16.3.0/24, 172.16.13.0/24 and fd00:3::/64 (by design), so not applicable; · = itself")
	for _, src := range all {
		for _, dst := range all {
			if c := m[[2]netip.Addr{src.addr, dst.addr}]; c.err != nil {
				fmt.Printf("✗ %s %s -> %s %s: %v\n", src.name, src.addr, dst.name, dst.addr, c.err)
			}
		}
	}
}

func cellText(src, dst endpoint, m map[[2]netip.Addr]cell) string {
	switch {
	case src.addr == dst.addr:
		return "·"
	case src.subnet != dst.subnet:
		return "–"
	}
	c, ok := m[[2]netip.Addr{src.addr, dst.addr}]
	switch {
	case !ok:
		return "?"
	case !c.ok:
		return "✗ " + c.note
	}
	ms := float64(c.rtt.Microseconds()) / 1000
	if ms < 1 {
		return fmt.Sprintf("✓ %.2fms", ms)
	}
	return fmt.Sprintf("✓ %.1fms", ms)
}

// failures counts the applicable pairs that did not answer.
func failures(all []endpoint, m map[[2]netip.Addr]cell) int {
	n := 0
	for _, src := range all {
		for _, dst := range all {
			if src.addr != dst.addr && src.subnet == dst.subnet && !m[[2]netip.Addr{src.addr, dst.addr}].ok {
				n++
			}
		}
	}
	return n
}

func pad(s string, width int) string {
	if n := utf8.RuneCountInString(s); n < width {
		return s + strings.Repeat(" ", width-n)
	}
	return s + " "
}

// deleteAll stops each guest and DELs its pod, then shows that each node
// is back to its state before the first ADD.
func (d *demo) deleteAll(ctx context.Context) error {
	fmt.Println()
	for _, p := range d.pods {
		if err := d.delPod(ctx, p); err != nil {
			return err
		}
		d.say("stopped %s, DEL through libcni on %s, removed its netns", p.Name, p.Node.Name)
	}
	d.pods = nil
	var errs []error
	for _, n := range d.c.Nodes {
		s, err := n.State()
		if err != nil {
			return err
		}
		errs = append(errs, d.printBack(n, d.baseline[n.Name], s))
	}
	return errors.Join(errs...)
}

func (d *demo) printBack(n *cluster.Node, before, after harness.State) error {
	if diff := before.Diff(after); diff != "" {
		fmt.Printf("%s is NOT back to what it was:\n%s\n", n.Name, diff)
		return fmt.Errorf("%s is not back to what it was", n.Name)
	}
	links := after.Host.Names()
	fmt.Printf("%s is back to what it was: links %s only; host addresses: %s; IPAM leases: %s; plugin records: %s\n",
		n.Name, strings.Join(links, ", "), none(len(after.Host.Addrs[cluster.HostBridge])), none(len(after.IPAM.Files)), none(len(after.StateDir.Files)))
	return nil
}

func none(n int) string {
	if n == 0 {
		return "none"
	}
	return fmt.Sprint(n)
}
