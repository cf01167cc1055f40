package harness

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Snapshot is the node state a scenario must leave as it found it: links,
// bridge addresses, tc filters and nft tables in the host netns, links and
// tc filters in each pod, and the files of the IPAM and state dirs.
type Snapshot map[string][]string

// Take records the state of host, pods and dirs.
func Take(host Netns, pods []Netns, dirs ...string) (Snapshot, error) {
	s := Snapshot{}
	if err := host.Do(func() error { return s.readHost() }); err != nil {
		return nil, err
	}
	for _, pod := range pods {
		if err := pod.Do(func() error { return s.readLinks("pod " + pod.Name) }); err != nil {
			return nil, err
		}
	}
	for _, d := range dirs {
		if err := s.readDir(d); err != nil {
			return nil, err
		}
	}
	for _, v := range s {
		sort.Strings(v)
	}
	return s, nil
}

func (s Snapshot) readHost() error {
	if err := s.readLinks("host"); err != nil {
		return err
	}
	br, err := netlink.LinkByName(BridgeName)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	addrs, err := netlink.AddrList(br, unix.AF_UNSPEC)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if !a.IP.IsLinkLocalUnicast() {
			s["bridge addrs"] = append(s["bridge addrs"], a.IPNet.String())
		}
	}
	return s.readNft()
}

func (s Snapshot) readLinks(where string) error {
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	for _, l := range links {
		a := l.Attrs()
		s[where+" links"] = append(s[where+" links"], fmt.Sprintf("%s(%s,master=%d,up=%v)", a.Name, l.Type(), a.MasterIndex, a.Flags&1 != 0))
		filters, err := netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS)
		if err == nil && len(filters) > 0 {
			s[where+" tc"] = append(s[where+" tc"], fmt.Sprintf("%s:%d filters", a.Name, len(filters)))
		}
	}
	return nil
}

func (s Snapshot) readNft() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	tables, err := c.ListTables()
	if err != nil {
		return fmt.Errorf("list nft tables: %w", err)
	}
	for _, t := range tables {
		chains, _ := c.ListChainsOfTableFamily(t.Family)
		n := 0
		for _, ch := range chains {
			if ch.Table.Name == t.Name {
				n++
			}
		}
		s["nft"] = append(s["nft"], fmt.Sprintf("%s(%d chains)", t.Name, n))
	}
	return nil
}

// readDir lists files, skipping those allowed to persist: locks and
// host-local's last_reserved_ip.* bookkeeping.
func (s Snapshot) readDir(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		base := d.Name()
		if base == "lock" || strings.HasPrefix(base, "last_reserved_ip.") {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		s["files "+filepath.Base(dir)] = append(s["files "+filepath.Base(dir)], rel)
		return nil
	})
}

// Without drops the entries of the named pods.
func (s Snapshot) Without(pods ...string) Snapshot {
	out := Snapshot{}
	for k, v := range s {
		out[k] = v
	}
	for _, p := range pods {
		delete(out, "pod "+p+" links")
		delete(out, "pod "+p+" tc")
	}
	return out
}

// Diff describes how b differs from s, or "" if it does not.
func (s Snapshot) Diff(b Snapshot) string {
	keys := map[string]bool{}
	for k := range s {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var out []string
	for k := range keys {
		if strings.Join(s[k], ",") != strings.Join(b[k], ",") {
			out = append(out, fmt.Sprintf("%s:\n  before %v\n  after  %v", k, s[k], b[k]))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}
