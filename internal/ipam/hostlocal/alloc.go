package hostlocal

import (
	"fmt"
	"net"
	"strconv"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// allocator takes addresses of one range set from the store. rangeID
// names the set's last_reserved_ip file: its index in the config.
type allocator struct {
	set     rangeSet
	store   *store
	rangeID string
}

func newAllocator(set rangeSet, st *store, idx int) *allocator {
	return &allocator{set: set, store: st, rangeID: strconv.Itoa(idx)}
}

// get reserves want, or else the next free address after the set's last
// reserved one (round robin, so a crash-looping pod does not get its old
// address back until the set has gone round). The attachment may hold
// no address of the set already: the spec forbids a second allocation,
// which is checked unless the caller vouches the attachment is fresh.
func (a *allocator) get(id, ifname string, want net.IP, fresh bool) (*current.IPConfig, error) {
	if err := a.store.Lock(); err != nil {
		return nil, err
	}
	defer a.store.Unlock()
	if want != nil {
		return a.reserve(id, ifname, want)
	}
	if !fresh {
		for _, held := range a.store.GetByID(id, ifname) {
			if _, err := a.set.rangeFor(held); err == nil {
				return nil, fmt.Errorf("%s has been allocated to %s, duplicate allocation is not allowed", held.String(), id)
			}
		}
	}
	next := a.iterate()
	for {
		ip, r := next()
		if ip == nil {
			return nil, fmt.Errorf("no IP addresses available in range set: %s", a.set.String())
		}
		ok, err := a.store.Reserve(id, ifname, ip, a.rangeID)
		if err != nil {
			return nil, err
		}
		if ok {
			return &current.IPConfig{Address: net.IPNet{IP: ip, Mask: r.Subnet.Mask}, Gateway: r.Gateway}, nil
		}
	}
}

// reserve takes the requested address, which must be in the set, free,
// and not the gateway.
func (a *allocator) reserve(id, ifname string, want net.IP) (*current.IPConfig, error) {
	if err := CanonicalIP(&want); err != nil {
		return nil, err
	}
	r, err := a.set.rangeFor(want)
	if err != nil {
		return nil, err
	}
	if want.Equal(r.Gateway) {
		return nil, fmt.Errorf("requested ip %s is subnet's gateway", want.String())
	}
	ok, err := a.store.Reserve(id, ifname, want, a.rangeID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("requested IP address %s is not available in range set %s", want, a.set.String())
	}
	return &current.IPConfig{Address: net.IPNet{IP: want, Mask: r.Subnet.Mask}, Gateway: r.Gateway}, nil
}

// release frees every address the attachment holds in the store.
func (a *allocator) release(id, ifname string) error {
	if err := a.store.Lock(); err != nil {
		return err
	}
	defer a.store.Unlock()
	return a.store.ReleaseByID(id, ifname)
}

// iterate returns a function giving the candidate addresses in order,
// each with its range, then nil once it has gone round the whole set:
// from the one after the last reserved address if that is still in the
// set, else from the first range's start; gateways are skipped.
func (a *allocator) iterate() func() (net.IP, *ipRange) {
	idx, cur, first := 0, net.IP(nil), net.IP(nil)
	// An unreadable last_reserved_ip only costs the round robin its turn.
	last, err := a.store.LastReservedIP(a.rangeID)
	if err == nil && last != nil && a.set.contains(last) {
		for i := range a.set {
			if a.set[i].contains(last) {
				idx, cur = i, last
				break
			}
		}
	} else {
		first = a.set[0].RangeStart
	}
	var next func() (net.IP, *ipRange)
	next = func() (net.IP, *ipRange) {
		r := &a.set[idx]
		switch {
		case cur == nil:
			cur, first = r.RangeStart, r.RangeStart
			if cur.Equal(r.Gateway) {
				return next()
			}
			return cur, r
		case cur.Equal(r.RangeEnd):
			idx = (idx + 1) % len(a.set)
			r = &a.set[idx]
			cur = r.RangeStart
		default:
			cur = nextIP(cur)
		}
		if first == nil {
			first = cur
		} else if cur.Equal(first) {
			return nil, nil
		}
		if cur.Equal(r.Gateway) {
			return next()
		}
		return cur, r
	}
	return next
}
