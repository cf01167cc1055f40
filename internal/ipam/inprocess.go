package ipam

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/ns"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/tapbridge/tapbridge-cni/internal/ipam/hostlocal"
	"github.com/tapbridge/tapbridge-cni/internal/ipam/static"
)

// call is one in-process call: what skel would hand the binary's verbs,
// and what the caller knows of the attachment's addresses (see Call).
type call struct {
	containerID, ifName, netns, args string
	config                           []byte
	known                            Known
}

// commands are one IPAM type's verbs. GC and STATUS have none: the
// binaries of the pinned version register none, so skel answers both
// with success once the config's version allows them (which tapbridge's
// own skel has checked on the same config).
type commands struct {
	add   func(context.Context, call) (*current.Result, string, error)
	del   func(context.Context, call) error
	check func(context.Context, call) error
}

// inProcess are the IPAM types run in this process.
var inProcess = map[string]*commands{
	"host-local": {
		add: func(ctx context.Context, c call) (*current.Result, string, error) {
			return hostlocal.Add(ctx, c.hostLocal())
		},
		del:   func(ctx context.Context, c call) error { return hostlocal.Del(ctx, c.hostLocal()) },
		check: func(ctx context.Context, c call) error { return hostlocal.Check(ctx, c.hostLocal()) },
	},
	"static": {
		add:   func(_ context.Context, c call) (*current.Result, string, error) { return static.Add(c.static()) },
		del:   func(_ context.Context, c call) error { return static.Del(c.static()) },
		check: func(_ context.Context, c call) error { return static.Check(c.static()) },
	},
}

func (c call) hostLocal() hostlocal.Call {
	hc := hostlocal.Call{ContainerID: c.containerID, IfName: c.ifName, Args: c.args, Config: c.config, Fresh: c.known.Fresh}
	if c.known.Leased != nil {
		hc.Leased = make([]net.IP, len(c.known.Leased))
		for i, a := range c.known.Leased {
			hc.Leased[i] = net.IP(a.Unmap().AsSlice())
		}
	}
	return hc
}

func (c call) static() static.Call {
	return static.Call{IfName: c.ifName, Args: c.args, Config: c.config}
}

// inprocess is an invoke.Exec that runs a type's verbs here instead of
// starting its binary. It gets the very stdin and environment the binary
// would, and answers as the binary's skel would: the result printed in
// the config's version (invoke then reads it as it reads a binary's
// stdout), an error as a *types.Error, code 999 unless the verb gave one.
type inprocess struct {
	version.PluginDecoder
	cmds  *commands
	known Known // the call's
}

var _ invoke.Exec = (*inprocess)(nil)

func (*inprocess) FindInPath(plugin string, _ []string) (string, error) { return plugin, nil }

func (e *inprocess) ExecPlugin(ctx context.Context, _ string, stdin []byte, environ []string) ([]byte, error) {
	env := envOf(environ)
	c := call{containerID: env["CNI_CONTAINERID"], ifName: env["CNI_IFNAME"], netns: env["CNI_NETNS"], args: env["CNI_ARGS"], config: stdin, known: e.known}
	cmd := env["CNI_COMMAND"]
	if err := versionGate(cmd, stdin); err != nil {
		return nil, err
	}
	var out []byte
	var err error
	switch cmd {
	case "ADD":
		if out, err = e.add(ctx, c); err == nil {
			err = netnsCheck(env)
		}
	case "DEL":
		if err = e.cmds.del(ctx, c); err == nil {
			err = netnsCheck(env)
		}
	case "CHECK":
		err = e.cmds.check(ctx, c)
	case "GC", "STATUS":
	default:
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("unknown CNI_COMMAND: %v", cmd), "")
	}
	if err != nil {
		return nil, asCNIError(err)
	}
	return out, nil
}

// add runs ADD and prints its result as types.PrintResult does.
func (e *inprocess) add(ctx context.Context, c call) ([]byte, error) {
	res, confVersion, err := e.cmds.add(ctx, c)
	if err != nil {
		return nil, err
	}
	r, err := res.GetAsVersion(confVersion)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := r.PrintTo(&out); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// minVersion is the lowest config version skel lets each verb run at.
var minVersion = map[string]string{"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}

// versionGate is skel's check of the config's cniVersion against the
// verb and against the versions the binaries claim (all of them).
// tapbridge's own skel has refused what it does not support by now; this
// keeps the answer the binary's for the rest.
func versionGate(cmd string, stdin []byte) *types.Error {
	v, err := (&version.ConfigDecoder{}).Decode(stdin)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	if min, ok := minVersion[cmd]; ok {
		ok, err := version.GreaterThanOrEqualTo(v, min)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, err.Error(), "")
		}
		if !ok {
			return types.NewError(types.ErrIncompatibleCNIVersion, "config version does not allow "+cmd, "")
		}
	}
	if verr := (&version.Reconciler{}).Check(v, version.All); verr != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "incompatible CNI versions", verr.Details())
	}
	return nil
}

// netnsCheck is skel's check after a successful ADD or DEL: CNI_NETNS
// must not be the netns the plugin runs in (unless CNI_NETNS_OVERRIDE).
func netnsCheck(env map[string]string) error {
	if o := env["CNI_NETNS_OVERRIDE"]; strings.ToUpper(o) == "TRUE" || o == "1" {
		return nil
	}
	same, nsErr := ns.CheckNetNS(env["CNI_NETNS"])
	if nsErr != nil {
		return nsErr
	}
	if same {
		return types.NewError(types.ErrInvalidNetNS, "plugin's netns and netns from CNI_NETNS should not be the same", "")
	}
	return nil
}

// asCNIError is skel's mapping: a verb's *types.Error as it is, any
// other error as code 999 with its text.
func asCNIError(err error) *types.Error {
	var e *types.Error
	if errors.As(err, &e) {
		return e
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}

// envOf reads KEY=value pairs, the last of a key winning, as getenv in
// a child started with that environment would.
func envOf(environ []string) map[string]string {
	env := make(map[string]string, 8)
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "CNI_") {
			env[k] = v
		}
	}
	return env
}
