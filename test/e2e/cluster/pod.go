package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// Pod is a VM pod: a netns with one tapbridge attachment, and perhaps a
// guest on its TAP.
type Pod struct {
	Name        string // e.g. "vm1"
	Node        *Node
	Network     string // the key of the node's network
	NS          harness.Netns
	ContainerID string
	IfName      string // "pod<hash>", as KubeVirt asks Multus for

	Result *current.Result
	Tap    string           // the TAP in the pod netns, from the result
	HostIf string           // the host end of the veth, from the result
	MAC    net.HardwareAddr // the guest MAC (on IfName), from the result
	IP     netip.Prefix     // the guest's IPv4 address, from the result (invalid: none)
	IP6    netip.Prefix     // the guest's IPv6 address, from the result (invalid: none)

	opts PodOptions
}

// PodOptions are what a runtime passes for a pod besides its names: the
// capability arguments Multus takes from the pod's network selection
// (KubeVirt's macAddress, or KubeMacPool's pick, as "mac"; "ips").
type PodOptions struct {
	MAC net.HardwareAddr // runtimeConfig.mac; the network needs the mac capability
	IPs []netip.Prefix   // runtimeConfig.ips; the network needs the ips capability
	// Object is the pod in the API that K8S_POD_NAMESPACE, K8S_POD_NAME
	// and K8S_POD_UID of CNI_ARGS name (an IPAM on the API, such as
	// tapbridge-ipam, reads it); zero: "default"/"virt-launcher-<name>",
	// no UID, and no such object.
	Object PodRef
}

// PodRef names a pod object in the API.
type PodRef struct{ Namespace, Name, UID string }

// IfNameFor is KubeVirt's name for the pod interface of a network:
// "pod" + 11 hex of a hash of the network name.
func IfNameFor(network string) string {
	sum := sha256.Sum256([]byte(network))
	return "pod" + hex.EncodeToString(sum[:])[:11]
}

// AddPod makes a pod netns and runs ADD for it on network through libcni.
// On failure the netns is removed again.
func (n *Node) AddPod(ctx context.Context, network, name string) (*Pod, error) {
	return n.AddPodWith(ctx, network, name, PodOptions{})
}

// AddPodWith is AddPod with capability arguments.
func (n *Node) AddPodWith(ctx context.Context, network, name string, o PodOptions) (*Pod, error) {
	n.mu.Lock()
	n.seq++
	seq := n.seq
	n.mu.Unlock()
	ns, err := n.c.newNetns(n.Name + "-pod" + strconv.Itoa(seq))
	if err != nil {
		return nil, err
	}
	cid := make([]byte, 32)
	_, _ = rand.Read(cid)
	p := &Pod{Name: name, Node: n, Network: network, NS: ns, ContainerID: hex.EncodeToString(cid), IfName: IfNameFor(network), opts: o}
	if err := p.add(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("add pod %s on %s: %w", name, n.Name, err), ns.Delete())
	}
	return p, nil
}

func (p *Pod) runtimeConf() *libcni.RuntimeConf {
	obj := p.Object()
	args := [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", obj.Namespace}, {"K8S_POD_NAME", obj.Name}}
	if obj.UID != "" {
		args = append(args, [2]string{"K8S_POD_UID", obj.UID})
	}
	rc := &libcni.RuntimeConf{
		ContainerID: p.ContainerID, NetNS: p.NS.Path(), IfName: p.IfName,
		Args: args, CapabilityArgs: map[string]any{},
	}
	if p.opts.MAC != nil {
		rc.CapabilityArgs["mac"] = p.opts.MAC.String()
	}
	if len(p.opts.IPs) > 0 {
		ips := make([]string, len(p.opts.IPs))
		for i, ip := range p.opts.IPs {
			ips[i] = ip.String()
		}
		rc.CapabilityArgs["ips"] = ips
	}
	return rc
}

// Object is the pod object CNI_ARGS name.
func (p *Pod) Object() PodRef {
	if p.opts.Object.Name != "" {
		return p.opts.Object
	}
	return PodRef{Namespace: "default", Name: "virt-launcher-" + p.Name}
}

func (p *Pod) attachment() types.GCAttachment {
	return types.GCAttachment{ContainerID: p.ContainerID, IfName: p.IfName}
}

func (p *Pod) add(ctx context.Context) error {
	l, err := p.Node.Network(p.Network)
	if err != nil {
		return err
	}
	var res types.Result
	err = p.Node.NS.Do(func() error {
		var err error
		res, err = p.Node.cni.AddNetworkList(ctx, l, p.runtimeConf())
		return err
	})
	if err != nil {
		return err
	}
	if p.Result, err = current.NewResultFromResult(res); err != nil {
		return err
	}
	return p.readResult()
}

// readResult finds the guest's MAC, IPs and TAP: the pod interface is
// CNI_IFNAME in the sandbox, its IPs point at it (a network without IPAM
// has none), and the TAP is the other interface in the sandbox.
func (p *Pod) readResult() error {
	r := p.Result
	podIf := -1
	for i, itf := range r.Interfaces {
		if itf.Name == p.IfName && itf.Sandbox != "" {
			podIf = i
		}
	}
	if podIf < 0 {
		return fmt.Errorf("result lacks the pod interface %s: %s", p.IfName, r)
	}
	var err error
	if p.MAC, err = net.ParseMAC(r.Interfaces[podIf].Mac); err != nil {
		return fmt.Errorf("result: mac of %s: %w", p.IfName, err)
	}
	for _, ip := range r.IPs {
		if ip.Interface == nil || *ip.Interface != podIf {
			continue
		}
		addr, _ := netip.AddrFromSlice(ip.Address.IP)
		ones, _ := ip.Address.Mask.Size()
		pfx := netip.PrefixFrom(addr.Unmap(), ones)
		switch {
		case pfx.Addr().Is4() && !p.IP.IsValid():
			p.IP = pfx
		case pfx.Addr().Is6() && !p.IP6.IsValid():
			p.IP6 = pfx
		}
	}
	for i, itf := range r.Interfaces {
		switch {
		case itf.Sandbox == "":
			p.HostIf = itf.Name
		case i != podIf:
			p.Tap = itf.Name
		}
	}
	if p.Tap == "" || p.HostIf == "" {
		return fmt.Errorf("result lacks the TAP or the host veth: %s", r)
	}
	return nil
}

// Check runs CHECK through libcni (with the cached result, as a runtime).
func (p *Pod) Check(ctx context.Context) error {
	l, err := p.Node.Network(p.Network)
	if err != nil {
		return err
	}
	return p.Node.NS.Do(func() error { return p.Node.cni.CheckNetworkList(ctx, l, p.runtimeConf()) })
}

// Del runs DEL through libcni. The pod netns stays (see Remove).
func (p *Pod) Del(ctx context.Context) error {
	l, err := p.Node.Network(p.Network)
	if err != nil {
		return err
	}
	return p.Node.NS.Do(func() error { return p.Node.cni.DelNetworkList(ctx, l, p.runtimeConf()) })
}

// Remove deletes the pod netns, as the runtime does after DEL.
func (p *Pod) Remove() error { return p.NS.Delete() }

// String is "vm1 (node1, vmnet3, 172.16.3.10/24)", with the IPv6
// address after the IPv4 one when there is one, and "no IPAM" when the
// network gave none.
func (p *Pod) String() string {
	var addrs []string
	for _, a := range []netip.Prefix{p.IP, p.IP6} {
		if a.IsValid() {
			addrs = append(addrs, a.String())
		}
	}
	if len(addrs) == 0 {
		addrs = []string{"no IPAM"}
	}
	return fmt.Sprintf("%s (%s, %s, %s)", p.Name, p.Node.Name, p.Network, strings.Join(addrs, ", "))
}

// ForgetCache removes libcni's cached result of the pod, as after a
// runtime lost its cache: only the plugin's own GC can then find the
// attachment (libcni's GC DELs just the cached ones).
func (p *Pod) ForgetCache() error {
	l, err := p.Node.Network(p.Network)
	if err != nil {
		return err
	}
	path := filepath.Join(p.Node.CacheDir(), "results", l.Name+"-"+p.ContainerID+"-"+p.IfName)
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("forget cached result of %s: %w", p.Name, err)
	}
	return nil
}

// Attachment is the pod's attachment as the harness's Live check expects
// it; hostAddr is the node's address on the pod's subnet ("" for none)
// and noIPAM says the network's IPAM keeps no host-local lease.
func (p *Pod) Attachment(network, hostAddr string, noIPAM bool) harness.Attachment {
	return harness.Attachment{CID: p.ContainerID, IfName: p.IfName, Network: network, Bridge: HostBridge, HostAddr: hostAddr, Pod: p.NS, NoIPAM: noIPAM}
}
