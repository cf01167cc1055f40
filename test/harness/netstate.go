package harness

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Kernel is the kernel state of one network namespace that the tests
// look at.
type Kernel struct {
	Links  []Link
	Addrs  map[string][]netip.Prefix // global addresses of each bridge asked for
	Routes []string                  // IPv4 main table, host only
	Nft    map[string]int            // "family table" → number of chains, host only
	FDB    map[string][]string       // static forwarding entries of each bridge asked for, host only
}

// Link is one network device.
type Link struct {
	Name, Type string
	Master     string // name of the bridge it is a port of, or ""
	Up         bool
	Filters    int // tc filters on its ingress hook
}

func (l Link) String() string {
	return fmt.Sprintf("%s(%s,master=%s,up=%v)", l.Name, l.Type, l.Master, l.Up)
}

// readKernel reads the calling thread's netns: links always; the
// addresses of bridges, the routes and nft when host is set.
func readKernel(host bool, bridges []string) (Kernel, error) {
	var k Kernel
	links, err := netlink.LinkList()
	if err != nil {
		return k, fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	for _, l := range links {
		a := l.Attrs()
		filters, err := netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS)
		if err != nil {
			filters = nil // no clsact: no filters
		}
		k.Links = append(k.Links, Link{Name: a.Name, Type: l.Type(), Master: names[a.MasterIndex], Up: a.Flags&1 != 0, Filters: len(filters)})
	}
	sort.Slice(k.Links, func(i, j int) bool { return k.Links[i].Name < k.Links[j].Name })
	if !host {
		return k, nil
	}
	k.Addrs = map[string][]netip.Prefix{}
	for _, b := range bridges {
		if k.Addrs[b], err = BridgeAddrs(b); err != nil {
			return k, err
		}
	}
	k.FDB = map[string][]string{}
	for _, b := range bridges {
		if k.FDB[b], err = staticFDB(b, names); err != nil {
			return k, err
		}
	}
	if k.Routes, err = routes(names); err != nil {
		return k, err
	}
	k.Nft, err = nftChains()
	return k, err
}

// BridgeAddrs lists the global addresses of a bridge in the calling
// thread's netns, sorted.
func BridgeAddrs(name string) ([]netip.Prefix, error) {
	br, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	}
	addrs, err := netlink.AddrList(br, unix.AF_UNSPEC)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}

// staticFDB lists the static and permanent forwarding entries of a
// bridge's ports ("MAC dev"), sorted: what `bridge fdb show br B`
// prints without the learned entries and the multicast ones (the
// device's own group list, not forwarding state). A port's own address is a
// permanent entry that goes with the port, so a leaked entry is one that
// outlives its attachment.
func staticFDB(bridge string, names map[int]string) ([]string, error) {
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", bridge, err)
	}
	neighs, err := netlink.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		return nil, fmt.Errorf("list fdb of %s: %w", bridge, err)
	}
	var out []string
	for _, n := range neighs {
		if n.MasterIndex != br.Attrs().Index || n.LinkIndex == br.Attrs().Index {
			// Not a port's, or the bridge's own address: a bridge without
			// a fixed MAC takes its ports' as they come and go, and its
			// own entry follows (the bridge's MAC is checked elsewhere).
			continue
		}
		if n.State&(unix.NUD_PERMANENT|unix.NUD_NOARP) == 0 {
			continue // learned
		}
		if len(n.HardwareAddr) > 0 && n.HardwareAddr[0]&1 != 0 {
			continue // the device's multicast list, which its own IPv6 joins in its own time
		}
		out = append(out, fmt.Sprintf("%s %s", n.HardwareAddr, names[n.LinkIndex]))
	}
	sort.Strings(out)
	return out, nil
}

func routes(names map[int]string) ([]string, error) {
	list, err := netlink.RouteList(nil, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var out []string
	for _, r := range list {
		out = append(out, fmt.Sprintf("%v via %v dev %s scope %v", r.Dst, r.Gw, names[r.LinkIndex], r.Scope))
	}
	sort.Strings(out)
	return out, nil
}

func nftChains() (map[string]int, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	tables, err := c.ListTables()
	if err != nil {
		return nil, fmt.Errorf("list nft tables: %w", err)
	}
	chains, err := c.ListChains()
	if err != nil {
		return nil, fmt.Errorf("list nft chains: %w", err)
	}
	out := map[string]int{}
	for _, t := range tables {
		out[nftName(t)] += 0
	}
	for _, ch := range chains {
		out[nftName(ch.Table)]++
	}
	return out, nil
}

func nftName(t *nftables.Table) string {
	family := fmt.Sprintf("family%d", t.Family)
	if t.Family == nftables.TableFamilyNetdev {
		family = "netdev"
	}
	return family + " " + t.Name
}

// LinkNames lists the links of the calling thread's netns, sorted (call
// it inside Netns.Do).
func LinkNames() ([]string, error) {
	k, err := readKernel(false, nil)
	return k.Names(), err
}

// OnlyLoopback reports whether the netns holds nothing but lo.
func (k Kernel) OnlyLoopback() bool {
	return len(k.Links) == 1 && k.Links[0].Name == "lo"
}

// Names lists the names of the links, sorted.
func (k Kernel) Names() []string {
	names := make([]string, len(k.Links))
	for i, l := range k.Links {
		names[i] = l.Name
	}
	return names
}
