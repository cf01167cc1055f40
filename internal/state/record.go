package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
)

// Version is the record format this build writes. Version 1 (no "version"
// field) is the format before records carried the IPAM result; it is still
// read, as a node upgraded with attachments in place has such records.
const Version = 2

// ErrVersion is returned for a record written by a newer build, whose
// fields this one could misread.
var ErrVersion = errors.New("unknown record version")

// Phase says how far the ADD that wrote a record got.
type Phase string

const (
	// PhaseAdding is the claim ADD writes before it touches anything: it
	// holds the names DEL and GC need, not yet the addresses.
	PhaseAdding Phase = "adding"
	// PhaseReady is the complete record of an ADD that succeeded, the only
	// kind a reader may serve. A version 1 record has no phase.
	PhaseReady Phase = "ready"
)

// Record is one attachment, as the plugin's DEL, GC and CHECK and every
// other reader (the node agent, an operator) see it. It uses no type of
// the CNI libraries, so readers need not link them.
type Record struct {
	Key         string  `json:"-"` // the file's name: the attachment's key
	Version     int     `json:"version"`
	Phase       Phase   `json:"phase,omitempty"`
	ContainerID string  `json:"containerID"`
	IfName      string  `json:"ifname"`
	Network     string  `json:"network"`
	Bridge      string  `json:"bridge"`
	Netns       string  `json:"netns"`
	HostIf      string  `json:"hostIf"`
	Tap         string  `json:"tap"`
	MAC         string  `json:"mac"` // the guest's
	MTU         int     `json:"mtu,omitempty"`
	Pod         Pod     `json:"pod,omitzero"`
	IPs         []IP    `json:"ips,omitempty"`
	Routes      []Route `json:"routes,omitempty"`
	DNS         DNS     `json:"dns,omitzero"`
	DHCP        *DHCP   `json:"dhcp,omitempty"` // nil: the node agent does not serve this guest
	// LearnLinkLocal: the node agent learns the guest's own IPv6
	// link-local from its DAD into the port's table. Older readers ignore
	// it, which fails closed: the port keeps dropping that link-local.
	LearnLinkLocal bool `json:"learnLinkLocal,omitempty"`
}

// Pod is the Kubernetes pod of the attachment, when the runtime said
// (CNI_ARGS K8S_POD_NAMESPACE and K8S_POD_NAME).
type Pod struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
}

// IP is one of the guest's addresses from IPAM: the address with its
// subnet's prefix length, and that subnet's gateway if IPAM named one.
type IP struct {
	Address netip.Prefix `json:"address"`
	Gateway netip.Addr   `json:"gateway,omitzero"`
}

// Route is a route IPAM gave the guest. A zero GW means on-link.
type Route struct {
	Dst      netip.Prefix `json:"dst"`
	GW       netip.Addr   `json:"gw,omitzero"`
	MTU      int          `json:"mtu,omitempty"`
	AdvMSS   int          `json:"advmss,omitempty"`
	Priority int          `json:"priority,omitempty"`
	Table    *int         `json:"table,omitempty"`
	Scope    *int         `json:"scope,omitempty"`
}

// DNS is the resolver configuration IPAM gave the guest.
type DNS struct {
	Nameservers []netip.Addr `json:"nameservers,omitempty"`
	Domain      string       `json:"domain,omitempty"`
	Search      []string     `json:"search,omitempty"`
	Options     []string     `json:"options,omitempty"`
}

// DHCP says the node agent serves the guest its addresses (DHCPv4,
// DHCPv6, router advertisements) from the record, and how. Older readers
// ignore it, which is safe: the port's table keeps the guest's requests
// off the L2 whoever reads the record.
type DHCP struct {
	LeaseTime int `json:"leaseTime"` // seconds
}

// Ready reports whether the ADD that wrote r completed.
func (r Record) Ready() bool { return r.Phase == PhaseReady }

// encode is the bytes on disk: indented, so an operator can read them.
func encode(r Record) ([]byte, error) {
	r.Version = Version
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// decode reads a record of any version this build knows; anything else
// is an *UnreadableError.
func decode(key string, data []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return Record{}, unreadable(key, data, err)
	}
	switch {
	case r.Version == 0:
		r.Version = 1
	case r.Version < 0 || r.Version > Version:
		e := unreadable(key, data, fmt.Errorf("%w %d (this build reads up to %d)", ErrVersion, r.Version, Version))
		e.Version = r.Version
		return Record{}, e
	}
	// JSON such as "null" or "{}" decodes without error into nothing.
	if r.ContainerID == "" || r.IfName == "" {
		return Record{}, unreadable(key, data, errors.New("no containerID or ifname"))
	}
	r.Key = key
	return r, nil
}
