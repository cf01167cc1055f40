package arp

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Defaults for Options. Two probes guard against one being lost; the wait
// gives a loaded host on the same L2 segment time to answer while keeping
// the free case, the common one, around a quarter of a second.
const (
	DefaultCount    = 2
	DefaultInterval = 50 * time.Millisecond
	DefaultWait     = 200 * time.Millisecond
)

// Options tunes a probe; zero values get defaults.
type Options struct {
	Count    int           // probes sent (default 2)
	Interval time.Duration // between probes (default 50ms)
	Wait     time.Duration // how long to listen after the last probe (default 200ms)
}

// withDefaults fills in zero fields and rejects negative ones, which are
// always a caller bug rather than a request for some behaviour.
func (o Options) withDefaults() (Options, error) {
	if o.Count < 0 || o.Interval < 0 || o.Wait < 0 {
		return o, fmt.Errorf("invalid options %+v: negative value", o)
	}
	if o.Count == 0 {
		o.Count = DefaultCount
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.Wait == 0 {
		o.Wait = DefaultWait
	}
	return o, nil
}

// targetAddr validates the address to probe for. Only unicast addresses can
// be owned by a single host, so only they can be probed; and ARP only
// resolves IPv4.
func targetAddr(a netip.Addr) (netip.Addr, error) {
	if !a.IsValid() {
		return netip.Addr{}, errors.New("invalid IP address")
	}
	a = a.Unmap()
	if !a.Is4() {
		return netip.Addr{}, errors.New("not an IPv4 address")
	}
	if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, errors.New("not a unicast address")
	}
	return a, nil
}
