// Command skelfloor is the least a Go CNI plugin built on the reference
// libraries does per call: skel reads the environment and stdin and
// checks the version, the config is decoded, and ADD prints a result. It
// creates nothing. The benchmark execs it as it execs the plugins, for a
// floor that counts what any such plugin pays on top of a bare Go binary.
package main

import (
	"encoding/json"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add: func(args *skel.CmdArgs) error {
			var conf types.NetConf
			if err := json.Unmarshal(args.StdinData, &conf); err != nil {
				return err
			}
			return types.PrintResult(&current.Result{CNIVersion: conf.CNIVersion}, conf.CNIVersion)
		},
		Del: func(args *skel.CmdArgs) error {
			var conf types.NetConf
			return json.Unmarshal(args.StdinData, &conf)
		},
	}, version.All, "skelfloor")
}
