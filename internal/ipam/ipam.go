// Package ipam runs the configured IPAM plugin. It passes the very
// network configuration tapbridge received, so IPAM reads the conventions
// (runtimeConfig.ips, args.cni.ips, CNI_ARGS IP=) itself, and it bounds
// every call with a timeout: a hung IPAM must not hang the runtime.
//
// host-local and static run in this process (inprocess.go), on the upstream
// packages at the version go.mod pins, through the same invoke calls as an
// exec'd plugin: only the invoke.Exec differs, so results and errors take
// the same path. Any other type, or any type when Plugin.Exec is set, is
// exec'd from CNI_PATH (exec.go).
package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// ErrTimeout is returned when the IPAM plugin did not answer in time.
var ErrTimeout = errors.New("IPAM plugin timed out")

// Plugin is one IPAM plugin as configured for a network.
type Plugin struct {
	Type    string
	Config  []byte // the network configuration, as received
	Path    string // CNI_PATH
	Timeout time.Duration
	Exec    bool // exec the binary even for a type run in process
}

// Call identifies the attachment an IPAM call is about.
type Call struct {
	ContainerID string
	IfName      string
	Netns       string
	Args        string // CNI_ARGS
	// Hold is inherited by an exec'd IPAM process and so stays open while
	// it runs, even past the caller's death: the attachment's lock. (An
	// IPAM run in process dies with the caller, so needs no such hold.)
	Hold *os.File
	Known
}

// Known is what the caller knows of the attachment's addresses, which
// spares an IPAM run in process (host-local) a read of every lease of the
// node; an exec'd IPAM ignores it.
type Known struct {
	// Fresh (ADD): the attachment holds no address of this IPAM.
	Fresh bool
	// Leased (DEL): all the attachment's addresses; nil when unknown.
	Leased []netip.Addr
}

// Add allocates addresses for the attachment.
func (p Plugin) Add(ctx context.Context, c Call) (*current.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	path, runner, err := p.runner(c)
	if err != nil {
		return nil, err
	}
	r, err := invoke.ExecPluginWithResult(ctx, path, p.Config, p.args("ADD", c), runner)
	if err != nil {
		return nil, p.wrap(ctx, "ADD", err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, fmt.Errorf("IPAM %s ADD: convert result: %w", p.Type, err)
	}
	return res, nil
}

// Pending is an IPAM ADD running in the background.
type Pending struct {
	done chan struct{}
	res  *current.Result
	err  error
}

// Start runs Add in the background, so the caller's own work overlaps the
// IPAM plugin's process; Wait collects the result. The plugin is started
// from a thread in the caller's current (the node's) network namespace.
func (p Plugin) Start(ctx context.Context, c Call) *Pending {
	pd := &Pending{done: make(chan struct{})}
	go func() {
		defer close(pd.done)
		pd.res, pd.err = p.Add(ctx, c)
	}()
	return pd
}

// Wait returns what Add returned, once it has.
func (pd *Pending) Wait() (*current.Result, error) {
	<-pd.done
	return pd.res, pd.err
}

// Del releases the attachment's addresses (harmless if there are none).
func (p Plugin) Del(ctx context.Context, c Call) error { return p.run(ctx, "DEL", c) }

// Check asks IPAM whether the attachment's addresses are still allocated.
func (p Plugin) Check(ctx context.Context, c Call) error { return p.run(ctx, "CHECK", c) }

// Status forwards STATUS.
func (p Plugin) Status(ctx context.Context) error { return p.run(ctx, "STATUS", Call{}) }

// GC forwards GC with the same valid-attachments list.
func (p Plugin) GC(ctx context.Context) error { return p.run(ctx, "GC", Call{}) }

func (p Plugin) run(ctx context.Context, cmd string, c Call) error {
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	path, runner, err := p.runner(c)
	if err != nil {
		return err
	}
	if err := invoke.ExecPluginWithoutResult(ctx, path, p.Config, p.args(cmd, c), runner); err != nil {
		return p.wrap(ctx, cmd, err)
	}
	return nil
}

// InProcess reports whether calls run in this process rather than exec
// a binary.
func (p Plugin) InProcess() bool { return !p.Exec && inProcess[p.Type] != nil }

// runner is how the call runs: in this process for a type carried here
// (unless the config forces the exec), else the binary found in CNI_PATH.
func (p Plugin) runner(c Call) (string, invoke.Exec, error) {
	if p.InProcess() {
		return p.Type, &inprocess{cmds: inProcess[p.Type], known: c.Known}, nil
	}
	path, err := p.find()
	if err != nil {
		return "", nil, err
	}
	return path, &execer{hold: c.Hold}, nil
}

func (p Plugin) find() (string, error) {
	path, err := invoke.FindInPath(p.Type, filepath.SplitList(p.Path))
	if err != nil {
		return "", fmt.Errorf("find IPAM plugin %q in CNI_PATH %q: %w", p.Type, p.Path, err)
	}
	return path, nil
}

func (p Plugin) args(cmd string, c Call) *invoke.Args {
	return &invoke.Args{
		Command: cmd, ContainerID: c.ContainerID, NetNS: c.Netns,
		IfName: c.IfName, PluginArgsStr: c.Args, Path: p.Path,
	}
}

// wrap keeps IPAM's own *types.Error reachable with errors.As, so the
// runtime sees IPAM's code and message.
func (p Plugin) wrap(ctx context.Context, cmd string, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("IPAM %s %s: %w after %s: %w", p.Type, cmd, ErrTimeout, p.Timeout, err)
	}
	return fmt.Errorf("IPAM %s %s: %w", p.Type, cmd, err)
}
