// Command skelfloor is the least a Go CNI plugin built on the reference
// libraries does per call when it delegates addresses to an IPAM plugin,
// as tapbridge and the upstream bridge plugin do: skel reads the
// environment and stdin and checks the version, the config is decoded,
// the IPAM plugin is exec'd through the reference invoke package (what the
// plugins' ipam.ExecAdd calls), and ADD
// converts and prints its result. It creates nothing. The benchmark execs
// it as it execs the plugins, for a floor that counts what any such plugin
// pays besides the kernel work of its attachment.
package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

func decode(args *skel.CmdArgs) (types.NetConf, error) {
	var conf types.NetConf
	if err := json.Unmarshal(args.StdinData, &conf); err != nil {
		return conf, err
	}
	if conf.IPAM.Type == "" {
		return conf, fmt.Errorf("skelfloor needs an ipam section")
	}
	return conf, nil
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add: func(args *skel.CmdArgs) error {
			conf, err := decode(args)
			if err != nil {
				return err
			}
			r, err := invoke.DelegateAdd(context.Background(), conf.IPAM.Type, args.StdinData, nil)
			if err != nil {
				return err
			}
			res, err := current.NewResultFromResult(r)
			if err != nil {
				return err
			}
			return types.PrintResult(res, conf.CNIVersion)
		},
		Del: func(args *skel.CmdArgs) error {
			conf, err := decode(args)
			if err != nil {
				return err
			}
			return invoke.DelegateDel(context.Background(), conf.IPAM.Type, args.StdinData, nil)
		},
	}, version.All, "skelfloor")
}
