package hostlocal

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// netConf is the part of the network configuration host-local reads: it
// gets the whole document, not only its "ipam" section.
type netConf struct {
	Name          string    `json:"name"`
	CNIVersion    string    `json:"cniVersion"`
	IPAM          *ipamConf `json:"ipam"`
	RuntimeConfig struct {
		IPRanges []rangeSet  `json:"ipRanges,omitempty"` // capability ipRanges
		IPs      []*wantedIP `json:"ips,omitempty"`      // capability ips
	} `json:"runtimeConfig,omitempty"`
	Args *struct {
		CNI *struct {
			IPs []*wantedIP `json:"ips"`
		} `json:"cni"`
	} `json:"args"`
}

// ipamConf is the "ipam" section. The embedded range is the old form of
// a single range written straight into the section.
type ipamConf struct {
	ipRange
	Type       string         `json:"type"`
	Routes     []*types.Route `json:"routes"`
	DataDir    string         `json:"dataDir"`
	ResolvConf string         `json:"resolvConf"`
	Ranges     []rangeSet     `json:"ranges"`

	name      string   // the network's
	requested []net.IP // from CNI_ARGS IP=, args.cni.ips and runtimeConfig.ips, in that order
}

// envArgs is what host-local takes from CNI_ARGS.
type envArgs struct {
	types.CommonArgs
	IP wantedIP `json:"ip,omitempty"`
}

// wantedIP is a requested address, written with or without a prefix
// length (which is ignored).
type wantedIP struct{ net.IP }

func (w *wantedIP) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*w = wantedIP{}
		return nil
	}
	s := string(b)
	ip := net.ParseIP(s)
	if strings.Contains(s, "/") {
		ip, _, _ = net.ParseCIDR(s)
	}
	if ip == nil {
		return fmt.Errorf("invalid IP address %s", s)
	}
	w.IP = ip
	return nil
}

// loadConfig decodes and checks the configuration, with host-local's
// precedence and messages: CNI_ARGS IP=, then args.cni.ips, then
// runtimeConfig.ips are requested; runtimeConfig.ipRanges, then the old
// single range, then ranges are the range sets.
func loadConfig(stdin []byte, cniArgs string) (*ipamConf, string, error) {
	n := netConf{}
	if err := json.Unmarshal(stdin, &n); err != nil {
		return nil, "", err
	}
	if n.IPAM == nil {
		return nil, "", fmt.Errorf("IPAM config missing 'ipam' key")
	}
	if err := n.collectRequested(cniArgs); err != nil {
		return nil, "", err
	}
	if err := n.collectRanges(); err != nil {
		return nil, "", err
	}
	n.IPAM.name = n.Name
	return n.IPAM, n.CNIVersion, nil
}

func (n *netConf) collectRequested(cniArgs string) error {
	c := n.IPAM
	if cniArgs != "" {
		e := envArgs{}
		if err := types.LoadArgs(cniArgs, &e); err != nil {
			return err
		}
		if ip := e.IP.canonical(); ip != nil {
			c.requested = []net.IP{ip}
		}
	}
	if n.Args != nil && n.Args.CNI != nil {
		for _, w := range n.Args.CNI.IPs {
			c.requested = append(c.requested, w.canonical())
		}
	}
	for _, w := range n.RuntimeConfig.IPs {
		c.requested = append(c.requested, w.canonical())
	}
	for i := range c.requested {
		if err := CanonicalIP(&c.requested[i]); err != nil {
			return fmt.Errorf("cannot understand ip: %v", err)
		}
	}
	return nil
}

func (w *wantedIP) canonical() net.IP {
	if w == nil {
		return nil
	}
	return normal(w.IP)
}

func (n *netConf) collectRanges() error {
	c := n.IPAM
	if c.Subnet.IP != nil {
		c.Ranges = append([]rangeSet{{c.ipRange}}, c.Ranges...)
	}
	c.ipRange = ipRange{}
	if len(n.RuntimeConfig.IPRanges) > 0 {
		c.Ranges = append(n.RuntimeConfig.IPRanges, c.Ranges...)
	}
	if len(c.Ranges) == 0 {
		return fmt.Errorf("no IP ranges specified")
	}
	v4, v6 := 0, 0
	for i := range c.Ranges {
		if err := c.Ranges[i].canonicalize(); err != nil {
			return fmt.Errorf("invalid range set %d: %s", i, err)
		}
		if c.Ranges[i][0].RangeStart.To4() != nil {
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
	for i := range c.Ranges {
		for j := i + 1; j < len(c.Ranges); j++ {
			if c.Ranges[i].overlaps(c.Ranges[j]) {
				return fmt.Errorf("range set %d overlaps with %d", i, j)
			}
		}
	}
	return nil
}
