package kubeipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/tapbridge/tapbridge-cni/internal/pool"
)

// ErrRequest: a requested address this network's config cannot give
// (outside every range set, its gateway, excluded, or two for one set).
var ErrRequest = errors.New("requested address cannot be allocated")

// ErrTaken: a requested address, or a claim's, belongs to another owner,
// or disagrees with the address the owner already holds.
var ErrTaken = errors.New("address held by another owner")

// request is one requested address and the convention that asked for it.
type request struct {
	addr netip.Addr
	from string
}

// parseRequests reads the static requests with host-local's precedence
// and syntax: CNI_ARGS IP=, then args.cni.ips, then runtimeConfig.ips (an
// address, with or without a prefix length, which is ignored); a repeat
// of an address counts once. Each request goes to the range set that may
// hand it out; the result is the wanted address per set.
func parseRequests(raw *Raw, cniArgs string, sets []pool.Set) ([]netip.Addr, error) {
	reqs, err := collectRequests(raw, cniArgs)
	if err != nil {
		return nil, err
	}
	want := make([]netip.Addr, len(sets))
	from := make([]string, len(sets))
	for _, r := range reqs {
		i := setOf(sets, r.addr)
		if i < 0 {
			return nil, fmt.Errorf("%w: %s (%s) is in no range set of this network: %s", ErrRequest, r.addr, r.from, refusals(sets, r.addr))
		}
		if want[i].IsValid() {
			return nil, fmt.Errorf("%w: %s (%s) and %s (%s) are both for range set %d (%s): one address per set",
				ErrRequest, want[i], from[i], r.addr, r.from, i, sets[i])
		}
		want[i], from[i] = r.addr, r.from
	}
	return want, nil
}

func collectRequests(raw *Raw, cniArgs string) ([]request, error) {
	var reqs []request
	add := func(s, from string, kind error) error {
		a, err := parseRequest(s)
		if err != nil {
			return fmt.Errorf("%w: %s: %q is not an IP address", kind, from, s)
		}
		for _, r := range reqs {
			if r.addr == a {
				return nil
			}
		}
		reqs = append(reqs, request{a, from})
		return nil
	}
	for _, kv := range strings.Split(cniArgs, ";") {
		if k, v, _ := strings.Cut(kv, "="); k == "IP" && v != "" {
			if err := add(v, "CNI_ARGS IP", ErrArgs); err != nil {
				return nil, err
			}
		}
	}
	for i, s := range raw.Args.CNI.IPs {
		if err := add(s, fmt.Sprintf("args.cni.ips[%d]", i), ErrInvalid); err != nil {
			return nil, err
		}
	}
	for i, s := range raw.RuntimeConfig.IPs {
		if err := add(s, fmt.Sprintf("runtimeConfig.ips[%d]", i), ErrInvalid); err != nil {
			return nil, err
		}
	}
	return reqs, nil
}

func parseRequest(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr().Unmap(), nil
	}
	a, err := netip.ParseAddr(s)
	return a.Unmap(), err
}

func setOf(sets []pool.Set, a netip.Addr) int {
	for i, set := range sets {
		if _, ok := set.Find(a); ok {
			return i
		}
	}
	return -1
}

// refusals says why each set of a's family refuses a.
func refusals(sets []pool.Set, a netip.Addr) string {
	var why []string
	for i, set := range sets {
		if set[0].Subnet.Addr().Is4() == a.Is4() {
			why = append(why, fmt.Sprintf("set %d: %s", i, set.Refusal(a)))
		}
	}
	if len(why) == 0 {
		return "no set of its family"
	}
	return strings.Join(why, "; ")
}
