package bridge

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// TestAddrsMatchTheLibrary checks the bridge-only dump against the
// library's full dump filtered by link: the same addresses, prefixes,
// flags (including those above ifa_flags' 8 bits) and scopes, and none of
// another device's. The IPv6 addresses are added with NODAD, so none is
// tentative; the flag helpers are checked on them.
func TestAddrsMatchTheLibrary(t *testing.T) {
	harness.RequireRoot(t)
	n, err := harness.NewNetns(harness.RunID("tbbr"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Delete(); err != nil {
			t.Error(err)
		}
	})
	err = n.Do(func() error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		other := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0"}, PeerName: "veth1"}
		for _, l := range []netlink.Link{br, other} {
			if err := netlink.LinkAdd(l); err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		add := func(l netlink.Link, cidr string, flags int) {
			a, err := netlink.ParseAddr(cidr)
			if err != nil {
				t.Fatal(err)
			}
			a.Flags = flags
			if err := netlink.AddrAdd(l, a); err != nil {
				t.Fatalf("add %s: %v", cidr, err)
			}
		}
		add(br, "192.0.2.1/24", 0)
		add(br, "198.51.100.7/28", unix.IFA_F_NOPREFIXROUTE)
		add(br, "2001:db8::1/64", unix.IFA_F_NODAD)
		add(br, "2001:db8:1::1/64", unix.IFA_F_NODAD|unix.IFA_F_NOPREFIXROUTE)
		add(other, "192.0.2.2/24", 0)
		add(other, "2001:db8::2/64", unix.IFA_F_NODAD)
		b, err := Lookup("br0")
		if err != nil {
			return err
		}
		for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
			got, err := b.Addrs(family)
			if err != nil {
				return err
			}
			want, err := netlink.AddrList(br, family)
			if err != nil {
				return err
			}
			if !slices.EqualFunc(got, want, sameAddr) {
				t.Errorf("family %d: got %v, want %v", family, got, want)
			}
			for _, a := range got {
				if a.Prefix.Addr().IsLinkLocalUnicast() {
					continue // the kernel's own, with DAD
				}
				if a.Tentative() || a.DADFailed() {
					t.Errorf("%s: tentative %v, DAD failed %v, flags %#x", a.Prefix, a.Tentative(), a.DADFailed(), a.Flags)
				}
			}
			// The kernel itself sends the bridge's addresses only (parseAddr
			// would hide another device's, so look at the raw dump).
			msgs, err := addrDump(b.Index, family)
			if err != nil {
				return err
			}
			for _, m := range msgs {
				if idx := nl.DeserializeIfAddrmsg(m).Index; int(idx) != b.Index {
					t.Errorf("family %d: the dump sent an address of ifindex %d, not only the bridge's (%d)", family, idx, b.Index)
				}
			}
			if len(msgs) < 2 {
				t.Errorf("family %d: the raw dump has %d addresses, want the bridge's 2 or more", family, len(msgs))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// sameAddr compares with the library's reading of the same address; the
// raw dump's check covers the index.
func sameAddr(a Addr, b netlink.Addr) bool {
	ip, _ := netip.AddrFromSlice(b.IP)
	ones, _ := b.Mask.Size()
	want := netip.PrefixFrom(ip.Unmap(), ones)
	return a.Prefix == want && int(a.Flags) == b.Flags && int(a.Scope) == b.Scope
}

func TestAddrFlags(t *testing.T) {
	a := Addr{Flags: unix.IFA_F_TENTATIVE | unix.IFA_F_NOPREFIXROUTE}
	if !a.Tentative() || a.DADFailed() {
		t.Errorf("tentative address: Tentative %v DADFailed %v", a.Tentative(), a.DADFailed())
	}
	a.Flags = unix.IFA_F_DADFAILED | unix.IFA_F_TENTATIVE
	if !a.DADFailed() {
		t.Error("DADFailed is false for IFA_F_DADFAILED")
	}
}
