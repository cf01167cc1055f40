package config

import (
	"time"
)

// Lease times the node agent may hand out. The agent keeps no lease state
// (the record is the lease), so a short lease costs only renewals; an hour
// lets a guest ride out an agent restart or upgrade many times over, and a
// week is the longest a guest may keep an address after its record is
// gone while the agent is down.
const (
	DefaultLeaseTime = time.Hour
	minLeaseTime     = time.Minute
	maxLeaseTime     = 7 * 24 * time.Hour
)

// RawDHCP is the "dhcp" object: whether the node agent serves the guest
// its IPAM addresses (DHCPv4, DHCPv6, router advertisements).
type RawDHCP struct {
	Enabled   bool   `json:"enabled"`
	LeaseTime string `json:"leaseTime,omitempty"`
}

// DHCP is how the node agent serves the guests of a network.
type DHCP struct {
	LeaseTime time.Duration
}

// parseDHCP: serving is off unless asked for. Networks that existed
// before the agent may have a DHCP server of their own on the L2, which a
// served port would silence (its requests are kept off the L2), and a
// served network's STATUS fails until an agent runs; so turning it on is
// the admin's decision, one network at a time.
func parseDHCP(raw *Raw, _ Env, n *Net) error {
	d := raw.DHCP
	if d == nil || !d.Enabled {
		if d != nil && d.LeaseTime != "" {
			if _, err := leaseTime(d.LeaseTime); err != nil {
				return err
			}
		}
		return nil
	}
	if raw.IPAM.Type == "" {
		return invalid("dhcp.enabled", "needs an ipam section: the agent serves the guest the addresses IPAM gives")
	}
	lt, err := leaseTime(d.LeaseTime)
	if err != nil {
		return err
	}
	n.DHCP = &DHCP{LeaseTime: lt}
	return nil
}

func leaseTime(s string) (time.Duration, error) {
	if s == "" {
		return DefaultLeaseTime, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < minLeaseTime || d > maxLeaseTime || d%time.Second != 0 {
		return 0, invalid("dhcp.leaseTime", "%q is not a whole number of seconds between 1m and 168h (e.g. \"1h\")", s)
	}
	return d, nil
}
