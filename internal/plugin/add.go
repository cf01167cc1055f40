package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/internal/attachment"
	"github.com/tapbridge/tapbridge-cni/internal/bridge"
	"github.com/tapbridge/tapbridge-cni/internal/config"
	"github.com/tapbridge/tapbridge-cni/internal/failpoint"
	"github.com/tapbridge/tapbridge-cni/internal/ipam"
	"github.com/tapbridge/tapbridge-cni/internal/link"
	"github.com/tapbridge/tapbridge-cni/internal/redirect"
	"github.com/tapbridge/tapbridge-cni/internal/state"
	"github.com/tapbridge/tapbridge-cni/internal/undo"
)

// attachmentView is what ADD and CHECK both stand on: the attachment's
// names and guest MAC, the bridge and the MTU settled against it, the state
// dir, the pod netns, and the lease (IPAM's result for ADD, prevResult for
// CHECK).
type attachmentView struct {
	*Plugin
	names    attachment.Names
	guestMAC net.HardwareAddr
	mtu      int
	bridge   *bridge.Bridge
	store    *state.Store
	netns    ns.NetNS
	lease    *current.Result
}

// addOp is one ADD in progress: what prepare checked, and what the steps
// have made so far.
type addOp struct {
	attachmentView
	lock    *state.RecordLock // the claim's: held to the end, and by the IPAM plugin while it runs
	pending *ipam.Pending     // IPAM ADD, running while the pod side is built
	staged  *pendingWrite     // the complete record, written while the last steps run
	undo    undo.Stack
	// leaseKept: IPAM gave a lease and its DEL failed in the undo, so the
	// claim must stay.
	leaseKept bool
}

// Add attaches the pod: every check first, then the steps, each
// registering its undo; any failure undoes them all.
func (p *Plugin) Add(ctx context.Context) (*current.Result, error) {
	op, err := p.prepareAdd()
	if err != nil {
		return nil, err
	}
	defer op.netns.Close()
	defer op.unlock()
	steps := addSteps(op)
	for _, s := range steps {
		err := s.fn(ctx)
		if err == nil {
			err = failpoint.Hit(s.name)
		}
		p.logStep(ctx, s.name, err)
		if err != nil {
			return nil, errors.Join(err, op.undo.Run())
		}
	}
	op.undo.Release()
	return op.result(), nil
}

// prepareAdd checks everything that can be checked without changing
// anything: the netns, the bridge, the MTU, the state dir.
func (p *Plugin) prepareAdd() (*addOp, error) {
	op := &addOp{attachmentView: attachmentView{Plugin: p, names: attachment.For(p.id()), guestMAC: p.Net.MAC}}
	if op.guestMAC == nil {
		op.guestMAC = attachment.GuestMAC(p.id())
	}
	if err := op.openBridgeAndPod(p.Net.Bridge); err != nil {
		return nil, err
	}
	var err error
	if op.store, err = state.Open(p.Net.DataDir); err != nil {
		op.netns.Close()
		return nil, err
	}
	return op, nil
}

// openBridgeAndPod finds the bridge (it must be up), settles the MTU
// against it and opens the pod netns: what ADD and CHECK both stand on.
func (op *attachmentView) openBridgeAndPod(bridgeName string) error {
	var err error
	if op.bridge, err = bridge.Lookup(bridgeName); err != nil {
		return err
	}
	if err := op.bridge.CheckUp(); err != nil {
		return err
	}
	if op.mtu, err = pickMTU(op.Net.MTU, op.bridge); err != nil {
		return err
	}
	op.netns, err = openPodNetns(op.Env.Netns)
	return err
}

// pickMTU: 0 means the bridge's; more than the bridge's would let the VM
// send frames the bridge drops.
func pickMTU(want int, b *bridge.Bridge) (int, error) {
	if want == 0 {
		return b.MTU, nil
	}
	if want > b.MTU {
		return 0, &config.FieldError{Field: "mtu", Kind: config.ErrInvalid,
			Msg: fmt.Sprintf("%d is larger than bridge %s's MTU %d", want, b.Name, b.MTU)}
	}
	return want, nil
}

// openPodNetns opens the pod netns and refuses the plugin's own, which
// would put the VM's devices on the host (skel only checks after ADD).
func openPodNetns(path string) (ns.NetNS, error) {
	podNS, err := ns.GetNS(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNetns, err)
	}
	// GetNS takes any nsfs or procfs file: a mount namespace, or
	// /proc/<pid>/status, would only fail later, at setns, as EINVAL.
	if t, err := unix.IoctlRetInt(int(podNS.Fd()), unix.NS_GET_NSTYPE); err != nil || t != unix.CLONE_NEWNET {
		podNS.Close()
		return nil, fmt.Errorf("%w: %s is not a network namespace", ErrNetns, path)
	}
	self, err := netns.Get()
	if err != nil {
		podNS.Close()
		return nil, fmt.Errorf("%w: read own netns: %w", ErrNetns, err)
	}
	defer self.Close()
	if self.Equal(netns.NsHandle(podNS.Fd())) {
		podNS.Close()
		return nil, fmt.Errorf("%w: %s is the plugin's own network namespace", ErrNetns, path)
	}
	return podNS, nil
}

// writeRecord claims the attachment: its record, created locked, is also
// the attachment's lock, so a DEL that the runtime sends after killing
// this ADD waits for the IPAM plugin it leaves running.
func (op *addOp) writeRecord(context.Context) error {
	lock, err := op.store.Create(op.names.Key, op.record(state.PhaseAdding))
	if errors.Is(err, state.ErrExists) {
		return fmt.Errorf("%w: container %s ifname %s is attached on this node (DEL it first)",
			ErrExists, op.Env.ContainerID, op.Env.IfName)
	}
	if err != nil {
		return err
	}
	op.lock = lock
	op.undo.Push("record", func() error {
		if op.leaseKept { // the claim stays, and nothing staged after it
			return errors.Join(errLeaseKept, op.store.Unstage(op.names.Key))
		}
		return op.store.Delete(op.names.Key)
	})
	return nil
}

// errLeaseKept: the claim stays when IPAM gave a lease and its DEL failed
// in ADD's undo, so the runtime's DEL (or GC) still finds the attachment
// and releases its addresses. It also keeps true what startIPAM tells
// IPAM: no record, no address.
var errLeaseKept = errors.New("kept: IPAM may still hold the attachment's addresses, DEL releases them")

func (op *addOp) unlock() { op.lock.Unlock() }

func (op *addOp) createVeth(context.Context) error {
	err := link.CreateVeth(link.Veth{
		HostName: op.names.HostIf, HostMAC: op.names.HostMAC, BridgeIndex: op.bridge.Index,
		PodName: op.names.PodIf, PodMAC: op.guestMAC, PodNSFd: int(op.netns.Fd()),
		PodGroup: op.names.Group, MTU: op.mtu,
	})
	if err != nil {
		return err
	}
	op.undo.Push("veth", func() error { return link.DeleteVeth(op.names.HostIf, op.names.IsHostMAC) })
	if op.Net.PortIsolation {
		return op.bridge.Isolate(op.names.HostIf)
	}
	return nil
}

func (op *attachmentView) tapSpec() link.Tap {
	t := op.Net.Tap
	return link.Tap{
		Name: op.names.Tap, Owner: t.Owner, Group: t.Group, MultiQueue: t.MultiQueue,
		MAC: attachment.TapMAC(op.guestMAC), MTU: op.mtu, LinkGroup: op.names.Group,
	}
}

// buildPodSide makes the pod's side in one netns switch: the TAP, the
// redirects between it and the veth's pod end, and both links up. One
// switch, not one per part: each ns.Do is a new goroutine whose stack
// grows to 128 KiB for vishvananda/netlink's on-stack receive buffer (four
// copies), two setns and two opens of the thread's netns, which together
// cost an exec'd ADD more than the kernel's work here (figures: the
// bench's design notes). The redirects need no undo: they go with the
// devices.
func (op *addOp) buildPodSide(context.Context) error {
	spec := op.tapSpec()
	return op.netns.Do(func(ns.NetNS) error {
		if err := link.CreateTap(spec); err != nil {
			return err
		}
		op.undo.Push("tap", func() error {
			return op.netns.Do(func(ns.NetNS) error { return link.DeleteTap(spec.Name, spec.LinkGroup) })
		})
		if err := failpoint.Hit("tap"); err != nil {
			return err
		}
		if err := redirect.Add(op.names.PodIf, op.names.Tap); err != nil {
			return err
		}
		return link.UpWithoutIPv6(op.names.PodIf, op.names.Tap)
	})
}

// bringUpHost sets the veth's host end up, last, once the pod's side
// forwards: frames from the bridge then have somewhere to go.
func (op *addOp) bringUpHost(context.Context) error {
	if err := link.NoAddrGen(op.names.HostIf); err != nil {
		return err
	}
	return link.Up(op.names.HostIf)
}

func (op *attachmentView) ipamCall() ipam.Call {
	return ipam.Call{ContainerID: op.Env.ContainerID, IfName: op.Env.IfName, Netns: op.Env.Netns, Args: op.Env.Args}
}

// startIPAM starts IPAM ADD in the background: building the pod side
// does not need the addresses, so the two overlap. It comes after the veth
// so that an IPAM that works on the interface (dhcp) finds it.
func (op *addOp) startIPAM(ctx context.Context) error {
	if op.Net.IPAMType == "" {
		return nil
	}
	call := op.ipamCall()
	call.Hold = op.lock.File()
	// The claim was new (writeRecord) and a record goes only once IPAM
	// has released its addresses (DEL, GC, and ADD's undo keeps it when
	// IPAM DEL fails after a lease; the one exception, GC of a record too
	// damaged to name its container, is of a container gone for good): so
	// IPAM holds nothing of this attachment, and in-process host-local
	// need not read every lease to make sure.
	call.Fresh = true
	op.pending = op.ipam().Start(ctx, call)
	// Release even when ADD failed: IPAM may have stored an allocation
	// before failing, and DEL is harmless when it has none. Wait first, so
	// DEL never runs before the ADD it undoes.
	op.undo.Push("ipam", func() error {
		_, addErr := op.pending.Wait()
		err := op.ipam().Del(context.Background(), call)
		// A lease IPAM gave and could not take back keeps the claim. An
		// IPAM whose ADD failed may have refused the call outright, and
		// then refuses its DEL the same way, every time: the claim would
		// outlive every DEL. Such an IPAM releases what it took itself,
		// and the runtime's DEL after the failed ADD (no record: IPAM
		// reads its whole store) is there for what it could not.
		op.leaseKept = err != nil && addErr == nil
		return err
	})
	return nil
}

// awaitLease collects the addresses: everything from here on needs them.
func (op *addOp) awaitLease(context.Context) error {
	if op.pending == nil {
		return nil
	}
	res, err := op.pending.Wait()
	if err != nil {
		return err
	}
	op.lease = res
	return nil
}

func (op *attachmentView) guestIPs() []netip.Prefix {
	if op.lease == nil {
		return nil
	}
	out := make([]netip.Prefix, 0, len(op.lease.IPs))
	for _, ip := range op.lease.IPs {
		if p, ok := toPrefix(ip.Address); ok {
			out = append(out, p)
		}
	}
	return out
}

func toPrefix(n net.IPNet) (netip.Prefix, bool) {
	addr, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(addr.Unmap(), ones), true
}
