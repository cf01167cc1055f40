package hostaddr

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/internal/bridge"
)

// fakeBridge answers as the kernel and *bridge.Bridge do: adding an
// address that is there is EEXIST, removing one that is not is the
// kernel's EADDRNOTAVAIL, which DelAddr reports as nil. IPv6 addresses in
// dadFailed fail duplicate address detection as soon as they are added.
// IPv4 addresses follow the kernel's primary/secondary rule (devinet.c):
// an address added where one of the same subnet and prefix length is
// already there is its secondary; deleting a primary deletes its
// secondaries, or promotes the first of them when promote_secondaries is
// on (the bridge's value or "all").
type fakeBridge struct {
	addrs     []bridge.Addr
	dadFailed map[netip.Addr]bool
	adds      []netip.Prefix
	noDAD     []netip.Prefix // IPv6 adds that asked the kernel to skip DAD
	dels      []netip.Prefix
	promote   bridge.Promotion
	sets      []string // values written to the bridge's promote_secondaries
	onSet     func()   // runs after each write (a crash test's hook)
}

func newFakeBridge() *fakeBridge {
	return &fakeBridge{promote: bridge.Promotion{Value: "0", All: "0"}}
}

func (f *fakeBridge) Device() (string, int) { return "br-test", 7 }

func (f *fakeBridge) Addrs(family int) ([]bridge.Addr, error) {
	var out []bridge.Addr
	for _, a := range f.addrs {
		if (family == unix.AF_INET) == a.Prefix.Addr().Is4() {
			out = append(out, a)
		}
	}
	return out, nil
}

// same is the kernel's identity of an address: IPv4 by address and prefix
// length, IPv6 by address.
func same(a, b netip.Prefix) bool {
	return a.Addr() == b.Addr() && (a.Addr().Is6() || a.Bits() == b.Bits())
}

// sameSubnet is the kernel's test for a secondary: IPv4, same prefix
// length, same subnet.
func sameSubnet(a, b netip.Prefix) bool {
	return a.Addr().Is4() && b.Addr().Is4() && a.Bits() == b.Bits() && a.Masked() == b.Masked()
}

func (f *fakeBridge) AddAddr(p netip.Prefix, dad bool) error {
	for _, a := range f.addrs {
		if same(a.Prefix, p) {
			return fmt.Errorf("add %s to br-test: %w", p, unix.EEXIST)
		}
	}
	if !dad && p.Addr().Is6() {
		f.noDAD = append(f.noDAD, p)
	}
	f.addDAD(p, dad)
	f.adds = append(f.adds, p)
	return nil
}

// add puts p on the bridge as the kernel would (an admin's too).
func (f *fakeBridge) add(p netip.Prefix) { f.addDAD(p, true) }

// addDAD: without DAD an address the L2 already has is never found out.
func (f *fakeBridge) addDAD(p netip.Prefix, dad bool) {
	var flags uint32
	if dad && f.dadFailed[p.Addr()] {
		flags = unix.IFA_F_DADFAILED | unix.IFA_F_TENTATIVE
	}
	for _, a := range f.addrs {
		if sameSubnet(a.Prefix, p) {
			flags |= unix.IFA_F_SECONDARY
		}
	}
	f.addrs = append(f.addrs, bridge.Addr{Prefix: p, Flags: flags})
}

func (f *fakeBridge) DelAddr(p netip.Prefix) error {
	for i, a := range f.addrs {
		if a.Prefix.Addr() == p.Addr() && a.Prefix.Bits() == p.Bits() {
			f.addrs = append(f.addrs[:i], f.addrs[i+1:]...)
			f.dels = append(f.dels, p)
			if !a.Secondary() {
				f.dropSecondaries(p)
			}
			return nil
		}
	}
	return nil // EADDRNOTAVAIL: already gone
}

func (f *fakeBridge) dropSecondaries(primary netip.Prefix) {
	kept := f.addrs[:0]
	promoted := false
	for _, a := range f.addrs {
		switch {
		case !a.Secondary() || !sameSubnet(a.Prefix, primary):
		case !f.promote.On():
			continue // deleted with its primary
		case !promoted:
			a.Flags &^= unix.IFA_F_SECONDARY
			promoted = true
		}
		kept = append(kept, a)
	}
	f.addrs = kept
}

func (f *fakeBridge) Promotion() (bridge.Promotion, error) { return f.promote, nil }

func (f *fakeBridge) SetPromotion(v string) error {
	f.promote.Value = v
	f.sets = append(f.sets, v)
	if f.onSet != nil {
		f.onSet()
	}
	return nil
}

func (f *fakeBridge) has(p string) bool {
	for _, a := range f.addrs {
		if a.Prefix == netip.MustParsePrefix(p) {
			return true
		}
	}
	return false
}
