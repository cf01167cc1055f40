// Command tapbridge-cni is the CNI plugin binary. It is the only place
// that knows skel, stdout and CNI error codes: everything else returns
// plain wrapped errors that errors.go maps to codes.
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	// First of all inits: one P before anything allocates (see the package).
	_ "github.com/tapbridge/tapbridge-cni/cmd/tapbridge-cni/internal/oneproc"

	"github.com/tapbridge/tapbridge-cni/internal/arp"
	"github.com/tapbridge/tapbridge-cni/internal/config"
	"github.com/tapbridge/tapbridge-cni/internal/plugin"
)

// Version is stamped by the Makefile (-ldflags -X main.Version=...).
var Version = "dev"

// The main goroutine is not locked to its OS thread (the upstream plugins
// lock it in init): locked, it would pay a thread handoff each time it
// blocks (figures: the bench's design notes). Unlocked is safe: ns.NetNS.Do
// runs every netns switch on a locked goroutine that restores its thread or
// lets it die, and since Go 1.10 a locked thread never clones the runtime's
// new threads, so main only lands on threads in the plugin's own netns.

var supported = version.PluginSupports("0.3.1", "0.4.0", "1.0.0", "1.1.0")

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "-v") {
		fmt.Printf("tapbridge-cni %s\n", Version)
		return
	}
	if err := capStdin(); err != nil {
		exitWith(err)
	}
	funcs := skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus}
	if e := skel.PluginMainFuncsWithError(funcs, supported, "tapbridge-cni "+Version); e != nil {
		exitWith(e)
	}
}

func exitWith(e *types.Error) {
	if err := e.Print(); err != nil {
		fmt.Fprintln(os.Stderr, "write error to stdout:", err)
	}
	os.Exit(1)
}

// capStdin refuses a configuration larger than config.MaxConfigBytes
// before skel reads it all into memory.
func capStdin() *types.Error {
	if os.Getenv("CNI_COMMAND") == "VERSION" {
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(os.Stdin, config.MaxConfigBytes+1))
	if err != nil {
		return types.NewError(types.ErrIOFailure, "read stdin: "+err.Error(), "")
	}
	if len(data) > config.MaxConfigBytes {
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("network configuration is larger than %d bytes", config.MaxConfigBytes), "")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return types.NewError(types.ErrIOFailure, "pipe stdin: "+err.Error(), "")
	}
	go func() {
		_, _ = io.Copy(w, bytes.NewReader(data))
		w.Close()
	}()
	os.Stdin = r
	return nil
}

// load parses the configuration and builds the plugin for one call.
func load(command string, args *skel.CmdArgs) (*plugin.Plugin, error) {
	host, _ := os.Hostname()
	n, err := config.Parse(args.StdinData, config.Env{
		ContainerID: args.ContainerID, IfName: args.IfName, Args: args.Args, Hostname: host, ForDel: command == "DEL",
	})
	if err != nil {
		return nil, err
	}
	log := logger(n, command, args)
	for _, err := range n.Ignored {
		log.Warn("config field not valid, not needed by "+command, "err", err)
	}
	return &plugin.Plugin{
		Net: n,
		Env: plugin.Env{ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName, Args: args.Args, Path: args.Path},
		Log: log,
		AddrInUse: func(ctx context.Context, ifindex int, addr netip.Addr) (bool, error) {
			return arp.InUse(ctx, ifindex, addr, arp.Options{Wait: n.Host.ProbeWait})
		},
	}, nil
}

// logger writes to logFile, or stderr; never stdout, which carries the
// one JSON document the runtime reads.
func logger(n *config.Net, command string, args *skel.CmdArgs) *slog.Logger {
	var out io.Writer = os.Stderr
	if n.LogFile != "" {
		if f, err := os.OpenFile(n.LogFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err == nil {
			out = f // closed by the process exit
		}
	}
	h := slog.NewTextHandler(out, &slog.HandlerOptions{Level: n.LogLevel})
	return slog.New(h).With("command", command, "containerID", args.ContainerID, "ifname", args.IfName, "network", n.Name)
}
