package hostlocal

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// ipRange is one entry of a range set: the JSON keys and the defaults
// are host-local's.
type ipRange struct {
	RangeStart net.IP      `json:"rangeStart,omitempty"` // inclusive
	RangeEnd   net.IP      `json:"rangeEnd,omitempty"`   // inclusive
	Subnet     types.IPNet `json:"subnet"`
	Gateway    net.IP      `json:"gateway,omitempty"`
}

// rangeSet is the ranges one address is taken from (one per attachment).
type rangeSet []ipRange

// canonicalize checks the range and fills in the defaults: the gateway
// is the subnet's first address, the range runs from there to the last
// address (IPv4: the one before broadcast). Messages are host-local's.
func (r *ipRange) canonicalize() error {
	if err := CanonicalIP(&r.Subnet.IP); err != nil {
		return err
	}
	ones, bits := r.Subnet.Mask.Size()
	if ones > bits-2 {
		//lint:ignore ST1005 the binary's message, word for word
		return fmt.Errorf("Network %s too small to allocate from", (*net.IPNet)(&r.Subnet).String())
	}
	if len(r.Subnet.IP) != len(r.Subnet.Mask) {
		return fmt.Errorf("IPNet IP and Mask version mismatch")
	}
	if network := r.Subnet.IP.Mask(r.Subnet.Mask); !r.Subnet.IP.Equal(network) {
		//lint:ignore ST1005 the binary's message, word for word
		return fmt.Errorf("Network has host bits set. For a subnet mask of length %d the network address is %s", ones, network.String())
	}
	if r.Gateway == nil {
		r.Gateway = nextIP(r.Subnet.IP)
	} else if err := CanonicalIP(&r.Gateway); err != nil {
		return err
	}
	if err := r.canonicalBound("RangeStart", &r.RangeStart, nextIP(r.Subnet.IP)); err != nil {
		return err
	}
	return r.canonicalBound("RangeEnd", &r.RangeEnd, lastIP(r.Subnet))
}

// canonicalBound checks a given range bound, or sets its default.
func (r *ipRange) canonicalBound(name string, bound *net.IP, def net.IP) error {
	if *bound == nil {
		*bound = def
		return nil
	}
	if err := CanonicalIP(bound); err != nil {
		return err
	}
	if !r.contains(*bound) {
		return fmt.Errorf("%s %s not in network %s", name, bound.String(), (*net.IPNet)(&r.Subnet).String())
	}
	return nil
}

// contains reports whether addr is in the subnet and between the bounds
// that are set.
func (r *ipRange) contains(addr net.IP) bool {
	if CanonicalIP(&addr) != nil || len(addr) != len(r.Subnet.IP) {
		return false
	}
	if !(*net.IPNet)(&r.Subnet).Contains(addr) {
		return false
	}
	if r.RangeStart != nil && compareIP(addr, r.RangeStart) < 0 {
		return false
	}
	return r.RangeEnd == nil || compareIP(addr, r.RangeEnd) <= 0
}

func (r *ipRange) overlaps(o *ipRange) bool {
	if len(r.RangeStart) != len(o.RangeStart) {
		return false
	}
	return r.contains(o.RangeStart) || r.contains(o.RangeEnd) || o.contains(r.RangeStart) || o.contains(r.RangeEnd)
}

func (r *ipRange) String() string { return r.RangeStart.String() + "-" + r.RangeEnd.String() }

// canonicalize checks every range of the set: one family, no overlap.
func (s rangeSet) canonicalize() error {
	if len(s) == 0 {
		return fmt.Errorf("empty range set")
	}
	for i := range s {
		if err := s[i].canonicalize(); err != nil {
			return err
		}
		if len(s[i].RangeStart) != len(s[0].RangeStart) {
			return fmt.Errorf("mixed address families")
		}
	}
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[i].overlaps(&s[j]) {
				return fmt.Errorf("subnets %s and %s overlap", s[i].String(), s[j].String())
			}
		}
	}
	return nil
}

// rangeFor is the range of the set that holds addr.
func (s rangeSet) rangeFor(addr net.IP) (*ipRange, error) {
	if err := CanonicalIP(&addr); err != nil {
		return nil, err
	}
	for i := range s {
		if s[i].contains(addr) {
			return &s[i], nil
		}
	}
	return nil, fmt.Errorf("%s not in range set %s", addr.String(), s.String())
}

func (s rangeSet) contains(addr net.IP) bool {
	r, _ := s.rangeFor(addr)
	return r != nil
}

func (s rangeSet) overlaps(o rangeSet) bool {
	for i := range s {
		for j := range o {
			if s[i].overlaps(&o[j]) {
				return true
			}
		}
	}
	return false
}

func (s rangeSet) String() string {
	out := make([]string, len(s))
	for i := range s {
		out[i] = s[i].String()
	}
	return strings.Join(out, ",")
}

// CanonicalIP stores an IPv4 address in 4 bytes and an IPv6 one in 16,
// as the store's file names and the result need.
func CanonicalIP(ip *net.IP) error {
	if v4 := ip.To4(); v4 != nil {
		*ip = v4
		return nil
	}
	if v6 := ip.To16(); v6 != nil {
		*ip = v6
		return nil
	}
	return fmt.Errorf("IP %s not v4 nor v6", *ip)
}

// compareIP orders two addresses of one family; any other pair is -2,
// as host-local has it.
func compareIP(a, b net.IP) int {
	a, b = normal(a), normal(b)
	if len(a) == 0 || len(a) != len(b) {
		return -2
	}
	return bytes.Compare(a, b)
}

func normal(ip net.IP) net.IP {
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip.To16()
}

// nextIP is the address after ip, in ip's family's length.
func nextIP(ip net.IP) net.IP {
	a, ok := netip.AddrFromSlice(normal(ip))
	if !ok {
		return nil
	}
	return net.IP(a.Next().AsSlice())
}

// lastIP is the subnet's last address, less one for IPv4's broadcast.
func lastIP(subnet types.IPNet) net.IP {
	end := make(net.IP, len(subnet.IP))
	for i := range subnet.IP {
		end[i] = subnet.IP[i] | ^subnet.Mask[i]
	}
	if subnet.IP.To4() != nil {
		end[3]--
	}
	return end
}
