package cluster

import (
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// State is what a node must get back to once its pods are gone: its
// links, the addresses on br-ext, its routes, the IPAM leases and the
// plugin's records.
type State struct {
	Links     []string // "name type master=X"
	HostAddrs []netip.Prefix
	Routes    []string // IPv4 main table
	Leases    []string // host-local files other than locks and bookkeeping
	Records   []string // files in the plugin's dataDir other than locks
}

// State reads the node's state.
func (n *Node) State() (State, error) {
	var s State
	err := n.NS.Do(func() error { return s.readKernel() })
	if err != nil {
		return s, fmt.Errorf("read state of %s: %w", n.Name, err)
	}
	if s.Leases, err = files(n.IPAMDir(), func(base string) bool {
		return base == "lock" || strings.HasPrefix(base, "last_reserved_ip.")
	}); err != nil {
		return s, err
	}
	s.Records, err = files(n.StateDir(), func(base string) bool { return base == "lock" })
	return s, err
}

// HostAddrs lists the global addresses on the node's br-ext.
func (n *Node) HostAddrs() ([]netip.Prefix, error) {
	var s State
	err := n.NS.Do(func() error { return s.readHostAddrs() })
	return s.HostAddrs, err
}

// HostAddr is the node's address on subnet, if it has one.
func (n *Node) HostAddr(subnet netip.Prefix) (netip.Prefix, bool, error) {
	addrs, err := n.HostAddrs()
	if err != nil {
		return netip.Prefix{}, false, err
	}
	for _, a := range addrs {
		if a.Masked() == subnet.Masked() {
			return a, true, nil
		}
	}
	return netip.Prefix{}, false, nil
}

func (s *State) readKernel() error {
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	for _, l := range links {
		a := l.Attrs()
		s.Links = append(s.Links, fmt.Sprintf("%s %s master=%s", a.Name, l.Type(), names[a.MasterIndex]))
	}
	sort.Strings(s.Links)
	routes, err := netlink.RouteList(nil, unix.AF_INET)
	if err != nil {
		return err
	}
	for _, r := range routes {
		s.Routes = append(s.Routes, fmt.Sprintf("%v via %v dev %s scope %v", r.Dst, r.Gw, names[r.LinkIndex], r.Scope))
	}
	sort.Strings(s.Routes)
	return s.readHostAddrs()
}

func (s *State) readHostAddrs() error {
	br, err := netlink.LinkByName(HostBridge)
	if err != nil {
		return err
	}
	addrs, err := netlink.AddrList(br, unix.AF_UNSPEC)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		s.HostAddrs = append(s.HostAddrs, netip.PrefixFrom(ip.Unmap(), ones))
	}
	sort.Slice(s.HostAddrs, func(i, j int) bool { return s.HostAddrs[i].Addr().Less(s.HostAddrs[j].Addr()) })
	return nil
}

// files lists the regular files under dir (relative), skipping those
// skip accepts; a missing dir is empty.
func files(dir string, skip func(base string) bool) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if d.IsDir() || skip(d.Name()) {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		out = append(out, rel)
		return nil
	})
	sort.Strings(out)
	return out, err
}

// Diff describes how t differs from s, or "" when they are the same.
func (s State) Diff(t State) string {
	var out []string
	cmp := func(what string, a, b []string) {
		if strings.Join(a, "\n") != strings.Join(b, "\n") {
			out = append(out, fmt.Sprintf("%s: before %q, after %q", what, a, b))
		}
	}
	cmp("links", s.Links, t.Links)
	cmp("host addresses", prefixes(s.HostAddrs), prefixes(t.HostAddrs))
	cmp("routes", s.Routes, t.Routes)
	cmp("IPAM leases", s.Leases, t.Leases)
	cmp("plugin records", s.Records, t.Records)
	return strings.Join(out, "\n")
}

func prefixes(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// LinkNames lists the links of the calling thread's netns (call it inside
// Netns.Do).
func LinkNames() ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	names := make([]string, len(links))
	for i, l := range links {
		names[i] = l.Attrs().Name
	}
	sort.Strings(names)
	return names, nil
}
