// Package static is the static IPAM plugin's ADD, DEL and CHECK, run in
// tapbridge's process and doing what the binary of the version go.mod
// pins does (upstream's is all in a main package, so it is written here
// after its behaviour): the addresses of the config, or those a runtime
// or CNI_ARGS gives, returned as they are; nothing is stored.
package static

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/tapbridge/tapbridge-cni/internal/ipam/hostlocal"
)

// Call is one call as the binary would get it.
type Call struct {
	IfName string
	Args   string // CNI_ARGS: IP= and GATEWAY=
	Config []byte // the network configuration (stdin)
}

// Add returns the configured addresses, routes and DNS, and the config's
// cniVersion.
func Add(c Call) (*current.Result, string, error) {
	conf, version, err := loadConfig(c.Config, c.Args)
	if err != nil {
		return nil, "", err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, DNS: conf.DNS, Routes: conf.Routes}
	for _, a := range conf.Addresses {
		res.IPs = append(res.IPs, &current.IPConfig{Address: a.Address, Gateway: a.Gateway})
	}
	return res, version, nil
}

// Del has nothing to release.
func Del(Call) error { return nil }

// Check verifies that each configured address that prevResult holds has
// the configured gateway (an address prevResult lacks is not an error,
// as for the binary).
func Check(c Call) error {
	conf, _, err := loadConfig(c.Config, c.Args)
	if err != nil {
		return err
	}
	prev, err := prevResult(c.Config)
	if err != nil {
		return err
	}
	for _, want := range conf.Addresses {
		for _, got := range prev.IPs {
			if !want.Address.IP.Equal(got.Address.IP) {
				continue
			}
			if want.Gateway != nil && !want.Gateway.Equal(got.Gateway) {
				return fmt.Errorf("static: Failed to match addr %v on interface %v", got.Address.IP, c.IfName)
			}
			break
		}
	}
	return nil
}

func prevResult(stdin []byte) (*current.Result, error) {
	n := &types.NetConf{}
	if err := json.Unmarshal(stdin, n); err != nil {
		return nil, fmt.Errorf("failed to load netconf: %v", err)
	}
	if n.RawPrevResult == nil {
		//lint:ignore ST1005 the binary's message, word for word
		return nil, fmt.Errorf("Required prevResult missing")
	}
	if err := version.ParsePrevResult(n); err != nil {
		return nil, err
	}
	return current.NewResultFromResult(n.PrevResult)
}

// netConf is the part of the network configuration static reads.
type netConf struct {
	Name          string    `json:"name"`
	CNIVersion    string    `json:"cniVersion"`
	IPAM          *ipamConf `json:"ipam"`
	RuntimeConfig struct {
		IPs []string `json:"ips,omitempty"` // capability ips
	} `json:"runtimeConfig,omitempty"`
	Args *struct {
		CNI *struct {
			IPs []string `json:"ips"`
		} `json:"cni"`
	} `json:"args"`
}

type ipamConf struct {
	Type      string         `json:"type"`
	Routes    []*types.Route `json:"routes"`
	Addresses []address      `json:"addresses,omitempty"`
	DNS       types.DNS      `json:"dns"`
}

// address is one entry of "addresses": "address" in CIDR notation. The
// binary's struct also decodes "Address" (a Go net.IPNet) and "version"
// (ignored), so this one does too.
type address struct {
	AddressStr string `json:"address"`
	Gateway    net.IP `json:"gateway,omitempty"`
	Address    net.IPNet
	Version    string
}

// envArgs is what static takes from CNI_ARGS (field names are the keys).
type envArgs struct {
	types.CommonArgs
	IP      types.UnmarshallableString `json:"ip,omitempty"`
	GATEWAY types.UnmarshallableString `json:"gateway,omitempty"`
}

// loadConfig decodes the configuration with static's precedence: the
// config's addresses, plus those of CNI_ARGS IP= (with GATEWAY=); then
// args.cni.ips replaces them all, and runtimeConfig.ips replaces that.
func loadConfig(stdin []byte, cniArgs string) (*ipamConf, string, error) {
	n := netConf{}
	if err := json.Unmarshal(stdin, &n); err != nil {
		return nil, "", err
	}
	if n.IPAM == nil {
		return nil, "", fmt.Errorf("IPAM config missing 'ipam' key")
	}
	if err := n.addEnvArgs(cniArgs); err != nil {
		return nil, "", err
	}
	if n.Args != nil && n.Args.CNI != nil && len(n.Args.CNI.IPs) != 0 {
		if err := n.replaceAddresses(n.Args.CNI.IPs); err != nil {
			return nil, "", err
		}
	}
	if len(n.RuntimeConfig.IPs) != 0 {
		if err := n.replaceAddresses(n.RuntimeConfig.IPs); err != nil {
			return nil, "", err
		}
	}
	if err := n.checkAddresses(); err != nil {
		return nil, "", err
	}
	return n.IPAM, n.CNIVersion, nil
}

func (n *netConf) addEnvArgs(cniArgs string) error {
	if cniArgs == "" {
		return nil
	}
	e := envArgs{}
	if err := types.LoadArgs(cniArgs, &e); err != nil {
		return err
	}
	if e.IP != "" {
		for _, item := range strings.Split(string(e.IP), ",") {
			s := strings.TrimSpace(item)
			ip, subnet, err := net.ParseCIDR(s)
			if err != nil {
				return fmt.Errorf("the 'ip' field is expected to be in CIDR notation, got: '%s'", s)
			}
			n.IPAM.Addresses = append(n.IPAM.Addresses, address{AddressStr: s, Address: net.IPNet{IP: ip, Mask: subnet.Mask}})
		}
	}
	if e.GATEWAY != "" {
		for _, item := range strings.Split(string(e.GATEWAY), ",") {
			gw := net.ParseIP(strings.TrimSpace(item))
			if gw == nil {
				return fmt.Errorf("invalid gateway address: %s", item)
			}
			for i := range n.IPAM.Addresses {
				if n.IPAM.Addresses[i].Address.Contains(gw) {
					n.IPAM.Addresses[i].Gateway = gw
				}
			}
		}
	}
	return nil
}

func (n *netConf) replaceAddresses(list []string) error {
	n.IPAM.Addresses = make([]address, 0, len(list))
	for _, s := range list {
		ip, subnet, err := net.ParseCIDR(s)
		if err != nil {
			return fmt.Errorf("an entry in the 'ips' field is NOT in CIDR notation, got: '%s'", s)
		}
		subnet.IP = ip
		n.IPAM.Addresses = append(n.IPAM.Addresses, address{AddressStr: s, Address: *subnet})
	}
	return nil
}

// checkAddresses parses the config's own entries and counts families:
// specs before 0.3.0 allow one address of each.
func (n *netConf) checkAddresses() error {
	v4, v6 := 0, 0
	for i := range n.IPAM.Addresses {
		a := &n.IPAM.Addresses[i]
		if a.Address.IP == nil {
			ip, subnet, err := net.ParseCIDR(a.AddressStr)
			if err != nil {
				return fmt.Errorf("the 'address' field is expected to be in CIDR notation, got: '%s'", a.AddressStr)
			}
			a.Address = net.IPNet{IP: ip, Mask: subnet.Mask}
		}
		if err := hostlocal.CanonicalIP(&a.Address.IP); err != nil {
			return fmt.Errorf("invalid address %d: %s", i, err)
		}
		if a.Address.IP.To4() != nil {
			v4++
		} else {
			v6++
		}
	}
	if v4 > 1 || v6 > 1 {
		if ok, _ := version.GreaterThanOrEqualTo(n.CNIVersion, "0.3.0"); !ok {
			return fmt.Errorf("CNI version %v does not support more than 1 address per family", n.CNIVersion)
		}
	}
	return nil
}
