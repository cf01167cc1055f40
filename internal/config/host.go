package config

import (
	"net/netip"
	"sort"
)

// parseHost validates every node's static addresses (a typo for another
// node is still a typo) and keeps this node's.
func parseHost(raw *Raw, env Env, n *Net) error {
	h := raw.HostAddress
	n.Host = Host{Disabled: h.Disabled, Node: h.NodeName}
	if n.Host.Node == "" {
		n.Host.Node = env.Hostname
	}
	if n.Host.Node == "" && !h.Disabled {
		return invalid("hostAddress.nodeName", "is empty and the hostname is unknown")
	}
	var err error
	if n.Host.ProbeWait, err = duration("hostAddress.probeWait", h.ProbeWait, DefaultProbeWait); err != nil {
		return err
	}
	nodes := make([]string, 0, len(h.Static))
	for node := range h.Static {
		nodes = append(nodes, node)
	}
	sort.Strings(nodes) // deterministic error messages
	for _, node := range nodes {
		prefixes, err := parsePrefixes("hostAddress.static["+node+"]", h.Static[node], false)
		if err != nil {
			return err
		}
		if node == n.Host.Node {
			n.Host.Static = prefixes
		}
	}
	n.Host.Pool, err = parsePrefixes("hostAddress.pool", h.Pool, true)
	return err
}

// parsePrefixes reads "addr/len" strings. Static entries keep the host
// bits (they are addresses); pool entries are ranges and are masked.
func parsePrefixes(field string, list []string, masked bool) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, invalid(field, "%q is not an address with a prefix length (e.g. 172.16.13.150/24)", s)
		}
		if masked {
			p = p.Masked()
		} else if p.Addr() == p.Masked().Addr() && p.Bits() < p.Addr().BitLen()-1 {
			return nil, invalid(field, "%q is a network address, not a host address", s)
		}
		if p.Addr().IsMulticast() || p.Addr().IsUnspecified() || p.Addr().IsLoopback() {
			return nil, invalid(field, "%q cannot be a host address", s)
		}
		out = append(out, p)
	}
	return out, nil
}

// checkProbeBound refuses a probe that cannot fit in the pick's bound:
// pool probes run under the bridge lock, whose waiters give up on a
// holder after lockTimeout, so a pick gets half of it.
func checkProbeBound(_ *Raw, _ Env, n *Net) error {
	if len(n.Host.Pool) == 0 || n.Host.Disabled || n.Host.ProbeWait < n.LockTimeout/2 {
		return nil
	}
	return invalid("hostAddress.probeWait", "%s does not fit in half of lockTimeout (%s), which bounds the pool's probes under the bridge lock: lower it or raise lockTimeout",
		n.Host.ProbeWait, n.LockTimeout)
}
