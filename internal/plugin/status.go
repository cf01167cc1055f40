package plugin

import (
	"context"
	"fmt"

	"github.com/tapbridge/tapbridge-cni/internal/bridge"
	"github.com/tapbridge/tapbridge-cni/internal/failpoint"
	"github.com/tapbridge/tapbridge-cni/internal/redirect"
	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// Status reports whether an ADD could succeed now: the bridge is there
// and up, the state dir is writable, the kernel has the data path's
// features, and IPAM says it is ready.
func (p *Plugin) Status(ctx context.Context) error {
	if err := p.statusHere(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if err := p.checkAgent(); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if p.Net.IPAMType != "" {
		if err := p.ipam().Status(ctx); err != nil {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	return nil
}

// statusHere checks what the node itself must have: the bridge, the
// state dir, the kernel.
func (p *Plugin) statusHere(ctx context.Context) error {
	b, err := bridge.Lookup(p.Net.Bridge)
	if err != nil {
		return err
	}
	if err := b.CheckUp(); err != nil {
		return err
	}
	st, err := state.Open(p.Net.DataDir)
	if err != nil {
		return err
	}
	if err := st.Writable(); err != nil {
		return err
	}
	return p.checkKernel(ctx, st)
}

// checkAgent: the guests of a served network get their addresses only
// from the node agent, and those of a learning network their link-local
// through the port only once the agent learned it. The agent holds the
// state directory's agent lock while it runs (the two find each other
// through dataDir, nothing else).
func (p *Plugin) checkAgent() error {
	var needs, without string
	switch {
	case p.Net.DHCP != nil:
		needs, without = "dhcp enabled", "would get no address"
	case p.Net.LearnLinkLocal:
		needs, without = "learnLinkLocal on", "would have their IPv6 link-local dropped"
	default:
		return nil
	}
	running, err := state.NewReader(p.Net.DataDir).AgentRunning()
	if err != nil {
		return err
	}
	if !running {
		return fmt.Errorf("network %q has %s but no tapbridge-agent serves %s: its guests %s (is the agent's DaemonSet running with this dataDir?)",
			p.Net.Name, needs, p.Net.DataDir, without)
	}
	return nil
}

// checkKernel probes the kernel once per boot: the probe makes a netns,
// and runtimes call STATUS periodically. A pass is kept under the boot
// ID; a failure is not, so a fixed kernel is seen at the next call.
func (p *Plugin) checkKernel(ctx context.Context, st *state.Store) error {
	// The failpoint lets tests see the answer for a kernel that lacks a
	// feature, which this one cannot fake.
	if err := failpoint.Hit("kernel-check"); err != nil {
		return err
	}
	key, err := redirect.CheckKey()
	if err != nil {
		p.Log.WarnContext(ctx, "kernel check not kept", "err", err)
		return redirect.CheckKernel()
	}
	if st.KernelCheck(key) {
		return nil
	}
	if err := redirect.CheckKernel(); err != nil {
		return err
	}
	if err := st.SaveKernelCheck(key); err != nil {
		p.Log.WarnContext(ctx, "kernel check not kept", "err", err)
	}
	return nil
}
