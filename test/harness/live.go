package harness

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/tapbridge/tapbridge-cni/internal/attachment"
)

// Attachment is one attachment a test expects to be live.
type Attachment struct {
	CID, IfName string
	Network     string
	Bridge      string
	HostAddr    string // the host address its subnet needs, e.g. 10.77.0.250/24
	Pod         Netns
	NoIPAM      bool // L2 only: no IPAM lease
}

// Names are the devices and state key the plugin derives for a.
func (a Attachment) Names() attachment.Names {
	return attachment.For(attachment.ID{ContainerID: a.CID, IfName: a.IfName})
}

// Live checks that the node holds exactly the live attachments: host
// veths and their bridges, host addresses, nft chains, records,
// host-address users, IPAM leases and pod devices (every pod read holds
// the devices of its live attachments and else only lo; the pod of a
// live attachment must have been read), with no torn state file and no
// lock held.
func (s State) Live(live []Attachment) error {
	var errs []error
	errs = append(errs, s.liveHost(live)...)
	errs = append(errs, s.liveNft(live)...)
	errs = append(errs, s.liveStateDir(live)...)
	errs = append(errs, s.liveIPAM(live)...)
	errs = append(errs, s.livePods(live)...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node does not match the %d live attachments:\n%w", len(live), err)
	}
	return nil
}

func (s State) liveHost(live []Attachment) []error {
	var errs []error
	want := map[string]Attachment{}
	wantAddrs := map[string][]string{}
	for _, a := range live {
		want[a.Names().HostIf] = a
		if a.HostAddr != "" && !slices.Contains(wantAddrs[a.Bridge], a.HostAddr) {
			wantAddrs[a.Bridge] = append(wantAddrs[a.Bridge], a.HostAddr)
		}
	}
	seen := map[string]bool{}
	for _, l := range s.Host.Links {
		if !strings.HasPrefix(l.Name, "tb") {
			continue
		}
		seen[l.Name] = true
		a, ok := want[l.Name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("host veth %s belongs to no live attachment", l.Name))
		case l.Master != a.Bridge:
			errs = append(errs, fmt.Errorf("host veth %s of %s is not a port of %s", l.Name, a.CID, a.Bridge))
		}
	}
	for name, a := range want {
		if !seen[name] {
			errs = append(errs, fmt.Errorf("host veth %s of live %s/%s is missing", name, a.CID, a.IfName))
		}
	}
	for b, addrs := range s.Host.Addrs {
		var got []string
		for _, p := range addrs {
			got = append(got, p.String())
		}
		slices.Sort(wantAddrs[b])
		if g, w := strings.Join(got, ","), strings.Join(wantAddrs[b], ","); g != w {
			errs = append(errs, fmt.Errorf("bridge %s has addresses [%s], want [%s]", b, g, w))
		}
	}
	return errs
}

// liveNft: the anti-spoof tables are exactly one per live attachment,
// named after its host veth, each with its one chain.
func (s State) liveNft(live []Attachment) []error {
	count := map[string]int{}
	for t, n := range s.Host.Nft {
		if strings.Contains(t, " tapbridge-") {
			count[t] = n
		}
	}
	var errs []error
	for _, a := range live {
		key := "netdev tapbridge-" + a.Names().HostIf
		if got := count[key]; got != 1 {
			errs = append(errs, fmt.Errorf("nft table %s of %s/%s has %d chains, want 1", key, a.CID, a.IfName, got))
		}
		delete(count, key)
	}
	for key, n := range count {
		errs = append(errs, fmt.Errorf("nft table %s (%d chains) belongs to no live attachment", key, n))
	}
	return errs
}

// liveStateDir: one record per live attachment, the host-address users
// of each subnet are exactly the live attachments on it, and the dir is
// sane.
func (s State) liveStateDir(live []Attachment) []error {
	errs := []error{s.StateDir.Quiet()}
	want := map[string]Attachment{}
	var users []string
	for _, a := range live {
		k := a.Names().Key
		want[k] = a
		if a.HostAddr != "" {
			users = append(users, UserOf(a.Bridge, netip.MustParsePrefix(a.HostAddr), k))
		}
	}
	for k, rec := range s.StateDir.Records {
		a, ok := want[k]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("record %s (%s/%s) of no live attachment", k, rec.ContainerID, rec.IfName))
		case rec.ContainerID != a.CID || rec.IfName != a.IfName || rec.Bridge != a.Bridge || rec.Network != a.Network:
			errs = append(errs, fmt.Errorf("record %s is %+v, want %+v", k, rec, a))
		}
	}
	for k, a := range want {
		if _, ok := s.StateDir.Records[k]; !ok {
			errs = append(errs, fmt.Errorf("no record for live %s/%s (%s)", a.CID, a.IfName, k))
		}
	}
	for _, u := range users {
		if !slices.Contains(s.StateDir.Users, u) {
			errs = append(errs, fmt.Errorf("live attachment not counted as a host-address user: %s", u))
		}
	}
	for _, u := range s.StateDir.Users {
		if !slices.Contains(users, u) {
			errs = append(errs, fmt.Errorf("host-address user of no live attachment: %s", u))
		}
	}
	return errs
}

// liveIPAM: host-local holds exactly one IP per live attachment, each
// file naming a live container.
func (s State) liveIPAM(live []Attachment) []error {
	want := map[string]int{} // network/cid/ifname
	for _, a := range live {
		if !a.NoIPAM {
			want[a.Network+"/"+a.CID+"/"+a.IfName]++
		}
	}
	got := map[string]int{}
	for _, l := range s.IPAM.Leases {
		got[l.String()]++
	}
	var errs []error
	for _, f := range s.IPAM.Stray {
		errs = append(errs, fmt.Errorf("unexpected file %s in the IPAM dir", f))
	}
	for k, n := range got {
		if want[k] != n {
			errs = append(errs, fmt.Errorf("IPAM holds %d IPs for %s, want %d", n, k, want[k]))
		}
	}
	for k, n := range want {
		if got[k] != n {
			errs = append(errs, fmt.Errorf("IPAM holds %d IPs for live %s, want %d", got[k], k, n))
		}
	}
	return errs
}

// livePods: each live attachment's pod holds its pod end and TAP; every
// other device of the pods read is lo.
func (s State) livePods(live []Attachment) []error {
	var errs []error
	want := map[string]map[string]bool{}
	for name := range s.Pods {
		want[name] = map[string]bool{"lo": true}
	}
	for _, a := range live {
		w, ok := want[a.Pod.Name]
		if !ok {
			errs = append(errs, fmt.Errorf("pod %s of live %s/%s is gone", a.Pod.Name, a.CID, a.IfName))
			continue
		}
		w[a.Names().PodIf], w[a.Names().Tap] = true, true
	}
	for name, k := range s.Pods {
		got := map[string]bool{}
		for _, l := range k.Links {
			got[l.Name] = true
			if !want[name][l.Name] {
				errs = append(errs, fmt.Errorf("pod %s has stray device %s (%s)", name, l.Name, l.Type))
			}
		}
		for dev := range want[name] {
			if !got[dev] {
				errs = append(errs, fmt.Errorf("pod %s lacks device %s", name, dev))
			}
		}
	}
	return errs
}
