package main

import (
	"context"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/tapbridge/tapbridge-cni/internal/plugin"
)

var (
	cmdAdd    = verb("ADD", add)
	cmdDel    = verb("DEL", (*plugin.Plugin).Del)
	cmdCheck  = verb("CHECK", (*plugin.Plugin).Check)
	cmdStatus = verb("STATUS", (*plugin.Plugin).Status)
	cmdGC     = verb("GC", (*plugin.Plugin).GC)
)

// verb adapts a plugin verb to skel: load the config, run, log a failure,
// and turn it into the one coded error the runtime reads.
func verb(name string, run func(*plugin.Plugin, context.Context) error) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		p, err := load(name, args)
		if err != nil {
			return toCNI(err)
		}
		if err := run(p, context.Background()); err != nil {
			p.Log.Error(name+" failed", "err", err)
			return toCNI(err)
		}
		p.Log.Info(name + " done")
		return nil
	}
}

// add prints the result: stdout carries exactly this one document.
func add(p *plugin.Plugin, ctx context.Context) error {
	res, err := p.Add(ctx)
	if err != nil {
		return err
	}
	return types.PrintResult(res, p.Net.CNIVersion)
}
