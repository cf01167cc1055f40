package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
)

const (
	netName    = "benchnet"
	cniVersion = "1.0.0"
	// podIfName is what KubeVirt asks Multus for ("pod" + hash); every pod
	// has its own netns, so one name serves them all, for both plugins.
	podIfName = "pod1a2b3c4d5e6"
	nodeName  = "bench-node"
)

// tbOpts is one tapbridge network.
type tbOpts struct {
	DataDir  string
	Node     string
	HostAddr string // this node's static address on the subnet
	Spoof    bool
	DHCP     bool // served by the node agent
	IPAM     map[string]any
}

func tapbridgeConf(o tbOpts) []byte {
	c := map[string]any{
		"cniVersion": cniVersion, "name": netName, "type": "tapbridge-cni",
		"bridge": bridgeName,
		"tap":    map[string]any{"owner": 107, "group": 107},
		"hostAddress": map[string]any{
			"nodeName": o.Node,
			"static":   map[string]any{o.Node: []string{o.HostAddr}},
		},
		"dataDir": o.DataDir,
		"ipam":    o.IPAM,
	}
	if !o.Spoof {
		c["spoofCheck"] = false
	}
	if o.DHCP {
		c["dhcp"] = map[string]any{"enabled": true}
	}
	return mustJSON(c)
}

// bridgeConf is the upstream bridge plugin on the same bridge, configured
// as close to tapbridge as it goes: no gateway, no masquerade, no hairpin.
func bridgeConf(ipam map[string]any) []byte {
	return mustJSON(map[string]any{
		"cniVersion": cniVersion, "name": netName, "type": "bridge",
		"bridge": bridgeName, "isGateway": false, "ipMasq": false, "hairpinMode": false,
		"ipam": ipam,
	})
}

// hostLocal is the IPAM both plugins use in the control-plane rows.
func hostLocal(dir, subnet, start, end string) map[string]any {
	return map[string]any{
		"type": "host-local", "dataDir": dir,
		"ranges": [][]map[string]any{{{"subnet": subnet, "rangeStart": start, "rangeEnd": end}}},
	}
}

// staticIPAM gives one pod its addresses (one per family at most).
func staticIPAM(addrs ...string) map[string]any {
	var list []map[string]any
	for _, a := range addrs {
		list = append(list, map[string]any{"address": a})
	}
	return map[string]any{"type": "static", "addresses": list}
}

// nthAddr is the i-th pod address of a /16: 10.x.1.1 ... 10.x.1.250,
// 10.x.2.1 ... (never .0 or .255, which some guests refuse).
func nthAddr(base netip.Addr, i int) string {
	b := base.As4()
	b[2], b[3] = byte(1+i/250), byte(1+i%250)
	return fmt.Sprintf("%s/16", netip.AddrFrom4(b))
}

// nthAddr6 is nthAddr's IPv6 twin in a /64: base::1:1 ... base::1:fa,
// base::2:1 ...
func nthAddr6(base netip.Addr, i int) string {
	b := base.As16()
	b[13], b[15] = byte(1+i/250), byte(1+i%250)
	return fmt.Sprintf("%s/64", netip.AddrFrom16(b))
}

// withPrevResult is the DEL config libcni sends: the ADD result cached and
// injected as prevResult.
func withPrevResult(conf, result []byte) []byte {
	var c map[string]any
	if err := json.Unmarshal(conf, &c); err != nil {
		panic(err)
	}
	c["prevResult"] = json.RawMessage(result)
	return mustJSON(c)
}

// withIPAMExec makes tapbridge exec its IPAM even for host-local, which it
// otherwise runs in process.
func withIPAMExec(conf []byte) []byte {
	var c map[string]any
	if err := json.Unmarshal(conf, &c); err != nil {
		panic(err)
	}
	c["ipamExec"] = true
	return mustJSON(c)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
