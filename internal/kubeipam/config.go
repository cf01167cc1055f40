// Package kubeipam is tapbridge-ipam: a CNI IPAM whose only store is the
// Kubernetes API. Each address is an IPAllocation whose creation is the
// allocation; an address named by the pod's IPAMClaim belongs to the
// claim (same address for a re-created pod and for a migration target),
// any other to the pod attachment. This package holds the config and the
// verbs; cmd/tapbridge-ipam maps its errors to CNI codes.
package kubeipam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tapbridge/tapbridge-cni/internal/pool"
)

// Defaults.
const (
	DefaultKubeconfig = "/etc/cni/net.d/tapbridge-ipam.d/kubeconfig"
	DefaultTimeout    = 10 * time.Second
	minTimeout        = time.Second
	maxTimeout        = 5 * time.Minute
)

// Config errors, by CNI code: ErrDecode 6, ErrInvalid 7, ErrArgs 4.
var (
	ErrDecode  = errors.New("cannot decode network configuration")
	ErrInvalid = errors.New("invalid IPAM configuration")
	ErrArgs    = errors.New("invalid CNI_ARGS")
)

// RawRange is one entry of "ranges" (host-local's keys, plus exclude).
type RawRange struct {
	Subnet     string   `json:"subnet"`
	RangeStart string   `json:"rangeStart,omitempty"`
	RangeEnd   string   `json:"rangeEnd,omitempty"`
	Gateway    string   `json:"gateway,omitempty"`
	Exclude    []string `json:"exclude,omitempty"`
}

// RawIPAM is the "ipam" object.
type RawIPAM struct {
	Type       string         `json:"type"`
	Kubeconfig string         `json:"kubeconfig,omitempty"`
	NodeName   string         `json:"nodeName,omitempty"`
	Timeout    string         `json:"timeout,omitempty"`
	Ranges     [][]RawRange   `json:"ranges"`
	Routes     []*types.Route `json:"routes,omitempty"`
	DNS        types.DNS      `json:"dns,omitempty"`
}

// Raw is the part of the network config the IPAM reads.
type Raw struct {
	CNIVersion  string          `json:"cniVersion"`
	Name        string          `json:"name"`
	IPAM        RawIPAM         `json:"ipam"`
	PrevResult  json.RawMessage `json:"prevResult,omitempty"`
	Attachments json.RawMessage `json:"cni.dev/valid-attachments,omitempty"`
	// Static requests, host-local's conventions (see requests.go).
	RuntimeConfig struct {
		IPs []string `json:"ips,omitempty"` // capability "ips"
	} `json:"runtimeConfig,omitempty"`
	Args struct {
		CNI struct {
			IPs []string `json:"ips,omitempty"`
		} `json:"cni,omitempty"`
	} `json:"args,omitempty"`
}

// Env is what the runtime passes besides stdin.
type Env struct {
	ContainerID, IfName, Args string
	Hostname                  string // the default node name
}

// Config is a validated IPAM configuration for one call.
type Config struct {
	CNIVersion string
	Network    string
	Kubeconfig string
	Node       string
	Timeout    time.Duration
	Sets       []pool.Set
	Routes     []*types.Route
	DNS        types.DNS
	Attachment Attachment
	// Args is CNI_ARGS as given: its IP= is a static request, which only
	// ADD reads (Requests).
	Args string
	Raw  *Raw
}

// Attachment is the call's (containerID, ifname) and, under Kubernetes,
// its pod (from CNI_ARGS).
type Attachment struct {
	ContainerID, IfName   string
	PodNamespace, PodName string
	PodUID                string
}

func invalid(field, format string, a ...any) error {
	return fmt.Errorf("%w: ipam.%s: %s", ErrInvalid, field, fmt.Sprintf(format, a...))
}

// Parse decodes and checks stdin and the environment; it touches nothing.
func Parse(stdin []byte, env Env) (*Config, error) {
	raw := &Raw{}
	if err := json.NewDecoder(bytes.NewReader(stdin)).Decode(raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecode, err)
	}
	if raw.Name == "" {
		return nil, fmt.Errorf("%w: the network has no name", ErrInvalid)
	}
	c := &Config{CNIVersion: raw.CNIVersion, Network: raw.Name, Kubeconfig: raw.IPAM.Kubeconfig,
		Routes: raw.IPAM.Routes, DNS: raw.IPAM.DNS, Raw: raw}
	if c.Kubeconfig == "" {
		c.Kubeconfig = DefaultKubeconfig
	}
	c.Node = raw.IPAM.NodeName
	if c.Node == "" {
		c.Node = env.Hostname
	}
	if c.Node == "" {
		return nil, invalid("nodeName", "is empty and the hostname is unknown")
	}
	var err error
	if c.Timeout, err = parseTimeout(raw.IPAM.Timeout); err != nil {
		return nil, err
	}
	if c.Sets, err = parseSets(raw.IPAM.Ranges); err != nil {
		return nil, err
	}
	if c.Attachment, err = parseArgs(env); err != nil {
		return nil, err
	}
	c.Args = env.Args
	return c, nil
}

// Requests is the address requested for each set (by index; the zero
// Addr when the set's address is the IPAM's to choose), checked against
// this config's ranges. Only ADD asks: DEL and CHECK get the stdin and
// CNI_ARGS of an ADD that may have been refused for them (or whose
// network's ranges were edited since), and DEL must still succeed, or the
// runtime retries the teardown forever.
func (c *Config) Requests() ([]netip.Addr, error) {
	return parseRequests(c.Raw, c.Args, c.Sets)
}

func parseTimeout(s string) (time.Duration, error) {
	if s == "" {
		return DefaultTimeout, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < minTimeout || d > maxTimeout {
		return 0, invalid("timeout", "%q is not a duration from %s to %s", s, minTimeout, maxTimeout)
	}
	return d, nil
}

func parseSets(raw [][]RawRange) ([]pool.Set, error) {
	if len(raw) == 0 {
		return nil, invalid("ranges", "is empty: give at least one range set")
	}
	var sets []pool.Set
	for i, rs := range raw {
		if len(rs) == 0 {
			return nil, invalid(fmt.Sprintf("ranges[%d]", i), "is empty")
		}
		var set pool.Set
		for j, rr := range rs {
			r, err := parseRange(rr)
			if err != nil {
				return nil, invalid(fmt.Sprintf("ranges[%d][%d]", i, j), "%v", err)
			}
			if len(set) > 0 && set[0].Subnet.Addr().Is4() != r.Subnet.Addr().Is4() {
				return nil, invalid(fmt.Sprintf("ranges[%d][%d]", i, j), "mixes IPv4 and IPv6 in one set")
			}
			for _, prev := range sets {
				for _, o := range prev {
					if o.Subnet.Overlaps(r.Subnet) {
						return nil, invalid(fmt.Sprintf("ranges[%d][%d]", i, j), "subnet %s overlaps %s of another set", r.Subnet, o.Subnet)
					}
				}
			}
			set = append(set, r)
		}
		sets = append(sets, set)
	}
	return sets, nil
}

func parseRange(rr RawRange) (pool.Range, error) {
	subnet, err := netip.ParsePrefix(rr.Subnet)
	if err != nil {
		return pool.Range{}, fmt.Errorf("subnet %q: %v", rr.Subnet, err)
	}
	addrs := map[string]*netip.Addr{"rangeStart": new(netip.Addr), "rangeEnd": new(netip.Addr), "gateway": new(netip.Addr)}
	for name, s := range map[string]string{"rangeStart": rr.RangeStart, "rangeEnd": rr.RangeEnd, "gateway": rr.Gateway} {
		if s == "" {
			continue
		}
		if *addrs[name], err = netip.ParseAddr(s); err != nil {
			return pool.Range{}, fmt.Errorf("%s %q: %v", name, s, err)
		}
	}
	var excl []netip.Prefix
	for _, x := range rr.Exclude {
		p, err := netip.ParsePrefix(x)
		if err != nil {
			a, aerr := netip.ParseAddr(x)
			if aerr != nil {
				return pool.Range{}, fmt.Errorf("exclude %q is neither a prefix nor an address", x)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		excl = append(excl, p.Masked())
	}
	return pool.NewRange(subnet, *addrs["rangeStart"], *addrs["rangeEnd"], *addrs["gateway"], excl)
}

// parseArgs reads K8S_POD_* from CNI_ARGS (IP is parseRequests'); other
// keys (MAC, IgnoreUnknown, K8S_POD_INFRA_CONTAINER_ID) are another
// plugin's.
func parseArgs(env Env) (Attachment, error) {
	a := Attachment{ContainerID: env.ContainerID, IfName: env.IfName}
	if env.Args == "" {
		return a, nil
	}
	for _, kv := range strings.Split(env.Args, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return Attachment{}, fmt.Errorf("%w: %q is not KEY=VALUE", ErrArgs, kv)
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			a.PodNamespace = v
		case "K8S_POD_NAME":
			a.PodName = v
		case "K8S_POD_UID":
			a.PodUID = v
		}
	}
	if (a.PodNamespace == "") != (a.PodName == "") {
		return Attachment{}, fmt.Errorf("%w: K8S_POD_NAMESPACE and K8S_POD_NAME come together", ErrArgs)
	}
	return a, nil
}
