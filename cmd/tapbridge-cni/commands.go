package main

import (
	"context"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

type netipAddr = netip.Addr

func cmdAdd(args *skel.CmdArgs) error {
	p, err := load("ADD", args)
	if err != nil {
		return toCNI(err)
	}
	res, err := p.Add(context.Background())
	if err != nil {
		p.Log.Error("ADD failed", "err", err)
		return toCNI(err)
	}
	p.Log.Info("ADD done", "hostIf", res.Interfaces[len(res.Interfaces)-3].Name)
	return types.PrintResult(res, p.Net.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) error {
	p, err := load("DEL", args)
	if err != nil {
		return toCNI(err)
	}
	if err := p.Del(context.Background()); err != nil {
		p.Log.Error("DEL failed", "err", err)
		return toCNI(err)
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	p, err := load("CHECK", args)
	if err != nil {
		return toCNI(err)
	}
	if err := p.Check(context.Background()); err != nil {
		p.Log.Warn("CHECK failed", "err", err)
		return toCNI(err)
	}
	return nil
}

func cmdStatus(args *skel.CmdArgs) error {
	p, err := load("STATUS", args)
	if err != nil {
		return toCNI(err)
	}
	if err := p.Status(context.Background()); err != nil {
		return toCNI(err)
	}
	return nil
}

func cmdGC(args *skel.CmdArgs) error {
	p, err := load("GC", args)
	if err != nil {
		return toCNI(err)
	}
	if err := p.GC(context.Background()); err != nil {
		p.Log.Error("GC failed", "err", err)
		return toCNI(err)
	}
	return nil
}
