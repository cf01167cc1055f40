// Command tapbridge-ipam is a CNI IPAM plugin whose only store is the
// Kubernetes API (package kubeipam). It builds a client in each exec
// (kubeconfig from the config), bounds the whole call by the config's
// timeout, and is the only place that knows skel, stdout and CNI codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/tapbridge/tapbridge-cni/internal/kubeapi"
	"github.com/tapbridge/tapbridge-cni/internal/kubeipam"
)

// Version is stamped by the Makefile (-ldflags -X main.Version=...).
var Version = "dev"

var supported = version.PluginSupports("0.3.1", "0.4.0", "1.0.0", "1.1.0")

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "-v") {
		fmt.Printf("tapbridge-ipam %s\n", Version)
		return
	}
	funcs := skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus}
	if e := skel.PluginMainFuncsWithError(funcs, supported, "tapbridge-ipam "+Version); e != nil {
		if err := e.Print(); err != nil {
			fmt.Fprintln(os.Stderr, "write error to stdout:", err)
		}
		os.Exit(1)
	}
}

// call is one verb's setup: the config, a client, the bounded context.
type call struct {
	conf   *kubeipam.Config
	client *kubeapi.Client
	ctx    context.Context
	cancel context.CancelFunc
}

func setUp(args *skel.CmdArgs) (*call, error) {
	host, _ := os.Hostname()
	conf, err := kubeipam.Parse(args.StdinData, kubeipam.Env{
		ContainerID: args.ContainerID, IfName: args.IfName, Args: args.Args, Hostname: host})
	if err != nil {
		return nil, err
	}
	cl, err := kubeapi.New(conf.Kubeconfig, conf.Timeout)
	if errors.Is(err, fs.ErrNotExist) {
		// The DaemonSet writes it on each node: until it has, the IPAM
		// is not ready yet (ADD: try again later; STATUS: 50), which is
		// not a wrong network config.
		return nil, fmt.Errorf("%w: %w (not written yet by the DaemonSet?)", kubeapi.ErrUnavailable, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errKubeconfig, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout)
	return &call{conf: conf, client: cl, ctx: ctx, cancel: cancel}, nil
}

func cmdAdd(args *skel.CmdArgs) error {
	c, err := setUp(args)
	if err != nil {
		return asCNI(err, nil)
	}
	defer c.cancel()
	res, err := kubeipam.Add(c.ctx, c.client, c.conf)
	if err != nil {
		return asCNI(err, c)
	}
	res.CNIVersion = c.conf.CNIVersion
	return types.PrintResult(res, c.conf.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) error {
	c, err := setUp(args)
	if err != nil {
		return asCNI(err, nil)
	}
	defer c.cancel()
	return asCNI(kubeipam.Del(c.ctx, c.client, c.conf), c)
}

func cmdCheck(args *skel.CmdArgs) error {
	c, err := setUp(args)
	if err != nil {
		return asCNI(err, nil)
	}
	defer c.cancel()
	return asCNI(kubeipam.Check(c.ctx, c.client, c.conf), c)
}

func cmdGC(args *skel.CmdArgs) error {
	c, err := setUp(args)
	if err != nil {
		return asCNI(err, nil)
	}
	defer c.cancel()
	valid, err := kubeipam.ParseValid(c.conf)
	if err != nil {
		return asCNI(err, c)
	}
	return asCNI(kubeipam.GC(c.ctx, c.client, c.conf, valid), c)
}

func cmdStatus(args *skel.CmdArgs) error {
	c, err := setUp(args)
	if err != nil {
		return statusError(err)
	}
	defer c.cancel()
	if err := kubeipam.Status(c.ctx, c.client); err != nil {
		return statusError(err)
	}
	return nil
}
