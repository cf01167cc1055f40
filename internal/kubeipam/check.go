package kubeipam

import (
	"context"
	"fmt"
	"net/netip"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/tapbridge/tapbridge-cni/internal/allocation"
	"github.com/tapbridge/tapbridge-cni/internal/kubeapi"
)

// Check verifies that the attachment holds one allocation per range set
// and that every address of prevResult in this IPAM's ranges is one of
// them, as is each address the config requests. It finds them as DEL does: by name from prevResult (which CHECK
// always has from a runtime), a list only when that falls short.
func Check(ctx context.Context, cl *kubeapi.Client, c *Config) error {
	store := allocation.Store{Dynamic: cl.Dynamic, Metadata: cl.Metadata}
	user := allocation.User{ContainerID: c.Attachment.ContainerID, IfName: c.Attachment.IfName, Node: c.Node}
	allocs, err := usedBy(ctx, store, c, user)
	if err != nil {
		return err
	}
	held := map[netip.Addr]bool{}
	for _, a := range allocs {
		held[a.Addr()] = true
	}
	for i, set := range c.Sets {
		found := false
		for a := range held {
			if _, ok := set.Find(a); ok {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%w: attachment %s/%s holds no address of range set %d (%s)", ErrCheck, user.ContainerID, user.IfName, i, set)
		}
	}
	// A static request is ADD's to judge against the config (DEL and
	// CHECK may get the stdin of a refused ADD); CHECK only verifies that
	// each one it can read is among the addresses held.
	if want, err := c.Requests(); err == nil {
		for _, a := range want {
			if a.IsValid() && !held[a] {
				return fmt.Errorf("%w: requested address %s is not held by attachment %s/%s", ErrCheck, a, user.ContainerID, user.IfName)
			}
		}
	}
	prev, err := prevIPs(c)
	if err != nil {
		return err
	}
	for _, a := range prev {
		if !held[a] && c.inRanges(a) {
			return fmt.Errorf("%w: prevResult address %s has no allocation of attachment %s/%s", ErrCheck, a, user.ContainerID, user.IfName)
		}
	}
	return nil
}

func (c *Config) inRanges(a netip.Addr) bool {
	return setOf(c.Sets, a) >= 0
}

func prevIPs(c *Config) ([]netip.Addr, error) {
	if len(c.Raw.PrevResult) == 0 {
		return nil, nil
	}
	r, err := version.NewResult(c.CNIVersion, c.Raw.PrevResult)
	if err != nil {
		return nil, fmt.Errorf("%w: prevResult: %v", ErrDecode, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, fmt.Errorf("%w: prevResult: %v", ErrDecode, err)
	}
	var out []netip.Addr
	for _, ip := range res.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}
