// Package plugin is tapbridge's CNI verbs: ADD, DEL, CHECK, STATUS and GC,
// each a short list of named steps over the packages that own the pieces.
// It knows nothing of stdout or CNI error codes (cmd/tapbridge-cni maps
// the sentinel errors below and those of the packages to codes).
package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/tapbridge/tapbridge-cni/internal/attachment"
	"github.com/tapbridge/tapbridge-cni/internal/bridge"
	"github.com/tapbridge/tapbridge-cni/internal/config"
	"github.com/tapbridge/tapbridge-cni/internal/hostaddr"
	"github.com/tapbridge/tapbridge-cni/internal/ipam"
	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// Sentinel errors for cmd to map to CNI codes.
var (
	ErrExists      = errors.New("attachment already exists")
	ErrNetns       = errors.New("invalid network namespace")
	ErrUnavailable = errors.New("plugin not available") // STATUS
	ErrPrevResult  = errors.New("prevResult is required")
	ErrCheck       = errors.New("check failed")
)

// Env is what the runtime passes besides the configuration.
type Env struct {
	ContainerID string
	Netns       string
	IfName      string
	Args        string // CNI_ARGS
	Path        string // CNI_PATH
}

// Plugin runs one CNI call.
type Plugin struct {
	Net       *config.Net
	Env       Env
	Log       *slog.Logger
	AddrInUse hostaddr.Prober // nil: take pool addresses unprobed (tests only)
}

func (p *Plugin) id() attachment.ID {
	return attachment.ID{ContainerID: p.Env.ContainerID, IfName: p.Env.IfName}
}

func (p *Plugin) ipam() ipam.Plugin {
	return ipam.Plugin{Type: p.Net.IPAMType, Config: p.Net.Bytes, Path: p.Env.Path, Timeout: p.Net.IPAMTimeout, Exec: p.Net.IPAMExec}
}

func (p *Plugin) policy() hostaddr.Policy {
	h := p.Net.Host
	return hostaddr.Policy{Node: h.Node, Static: h.Static, Pool: h.Pool}
}

// hostAddrs is the bridge's host-address manager; b may be nil when the
// bridge is gone (state is still released).
func (p *Plugin) hostAddrs(st *state.Store, name string, b *bridge.Bridge) *hostaddr.Manager {
	m := &hostaddr.Manager{State: st.Bridge(name), Policy: p.policy(), Probe: p.AddrInUse, PickTimeout: p.Net.LockTimeout / 2}
	if b != nil { // a nil *bridge.Bridge would be a non-nil interface
		m.Bridge = b
	}
	return m
}

// withNetns runs fn inside the pod netns at path.
func withNetns(path string, fn func() error) error {
	netns, err := ns.GetNS(path)
	if err != nil {
		return fmt.Errorf("%w: open %s: %w", ErrNetns, path, err)
	}
	defer netns.Close()
	return netns.Do(func(ns.NetNS) error { return fn() })
}

// netnsGone reports whether err says the netns no longer exists, which
// DEL and GC treat as "its devices are gone with it".
func netnsGone(err error) bool {
	var notExist ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	return errors.As(err, &notExist) || errors.As(err, &notNS)
}

// subnets are the host-address subnets of an attachment: those of its IPs,
// or, with no IPAM, the node's static addresses.
func (p *Plugin) subnets(ips []netip.Prefix) []netip.Prefix {
	if p.Net.Host.Disabled {
		return nil
	}
	if len(ips) == 0 && p.Net.IPAMType == "" {
		ips = p.Net.Host.Static
	}
	seen := map[netip.Prefix]bool{}
	var out []netip.Prefix
	for _, ip := range ips {
		if s := ip.Masked(); !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// logStep is how every step reports; the error itself carries the detail.
func (p *Plugin) logStep(ctx context.Context, step string, err error) {
	if err != nil {
		p.Log.WarnContext(ctx, "step failed", "step", step, "err", err)
		return
	}
	p.Log.DebugContext(ctx, "step done", "step", step)
}
