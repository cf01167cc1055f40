package ra_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/ndp"

	"github.com/tapbridge/tapbridge-cni/internal/ra"
)

var (
	portMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0xfe}
	subnet  = netip.MustParsePrefix("fd00:13::/64")
)

func params() ra.Params {
	return ra.Params{Prefix: subnet, MTU: 1500, SourceMAC: portMAC}
}

// decode parses an advertisement with ndp and checks what every one of
// ours carries: type, code 0, checksum left 0, hop limit, M=1, O=1.
func decode(t testing.TB, b []byte) *ndp.RouterAdvertisement {
	t.Helper()
	if len(b) < 4 || b[1] != 0 || binary.BigEndian.Uint16(b[2:4]) != 0 {
		t.Fatalf("ICMPv6 header %x, want code 0 and checksum 0", b[:min(len(b), 4)])
	}
	m, err := ndp.ParseMessage(b)
	if err != nil {
		t.Fatalf("advertisement does not decode: %v\n%x", err, b)
	}
	adv, ok := m.(*ndp.RouterAdvertisement)
	if !ok {
		t.Fatalf("decoded as %T", m)
	}
	if adv.CurrentHopLimit != ra.HopLimit || !adv.ManagedConfiguration || !adv.OtherConfiguration {
		t.Errorf("hop limit %d M=%v O=%v, want 64, M=1, O=1", adv.CurrentHopLimit, adv.ManagedConfiguration, adv.OtherConfiguration)
	}
	if adv.ReachableTime != 0 || adv.RetransmitTimer != 0 || adv.RouterSelectionPreference != ndp.Medium || adv.MobileIPv6HomeAgent || adv.NeighborDiscoveryProxy {
		t.Errorf("unexpected fields: %+v", adv)
	}
	return adv
}

// options sorts an advertisement's options by kind, failing on any kind we
// do not send or on a repeated one.
func options(t testing.TB, adv *ndp.RouterAdvertisement) (lla *ndp.LinkLayerAddress, pi *ndp.PrefixInformation, mtu *ndp.MTU) {
	t.Helper()
	for _, o := range adv.Options {
		switch o := o.(type) {
		case *ndp.LinkLayerAddress:
			if lla != nil {
				t.Error("two link-layer address options")
			}
			lla = o
		case *ndp.PrefixInformation:
			if pi != nil {
				t.Error("two prefix options")
			}
			pi = o
		case *ndp.MTU:
			if mtu != nil {
				t.Error("two MTU options")
			}
			mtu = o
		default:
			t.Errorf("unexpected option %T", o)
		}
	}
	return lla, pi, mtu
}

func TestAdvertisement(t *testing.T) {
	rows := []struct {
		name     string
		p        func(*ra.Params)
		lifetime time.Duration
		prefix   netip.Prefix
		mtu      uint32 // 0: no option
	}{
		{"defaults", func(*ra.Params) {}, 0, subnet, 1500},
		{"no MTU", func(p *ra.Params) { p.MTU = 0 }, 0, subnet, 0},
		{"minimum MTU", func(p *ra.Params) { p.MTU = ra.MinMTU }, 0, subnet, 1280},
		{"jumbo MTU", func(p *ra.Params) { p.MTU = ra.MaxMTU }, 0, subnet, 65535},
		{"host bits masked", func(p *ra.Params) { p.Prefix = netip.MustParsePrefix("fd00:13::15/64") }, 0, subnet, 1500},
		{"long prefix", func(p *ra.Params) { p.Prefix = netip.MustParsePrefix("2001:db8:1:2:3::/80") }, 0, netip.MustParsePrefix("2001:db8:1:2:3::/80"), 1500},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			p := params()
			row.p(&p)
			b, err := ra.Advertisement(p)
			if err != nil {
				t.Fatal(err)
			}
			adv := decode(t, b)
			if adv.RouterLifetime != row.lifetime {
				t.Errorf("router lifetime %s, want %s", adv.RouterLifetime, row.lifetime)
			}
			lla, pi, mtu := options(t, adv)
			if lla == nil || lla.Direction != ndp.Source || lla.Addr.String() != portMAC.String() {
				t.Errorf("source link-layer option %+v, want source %s", lla, portMAC)
			}
			if pi == nil {
				t.Fatal("no prefix information option")
			}
			got := netip.PrefixFrom(pi.Prefix, int(pi.PrefixLength))
			if got != row.prefix || !pi.OnLink || pi.AutonomousAddressConfiguration {
				t.Errorf("prefix %s L=%v A=%v, want %s L=1 A=0", got, pi.OnLink, pi.AutonomousAddressConfiguration, row.prefix)
			}
			if pi.ValidLifetime != ra.PrefixLifetime || pi.PreferredLifetime != ra.PrefixLifetime {
				t.Errorf("prefix lifetimes %s/%s, want %s", pi.ValidLifetime, pi.PreferredLifetime, ra.PrefixLifetime)
			}
			switch {
			case row.mtu == 0 && mtu != nil:
				t.Errorf("MTU option %d, want none", mtu.MTU)
			case row.mtu != 0 && (mtu == nil || mtu.MTU != row.mtu):
				t.Errorf("MTU option %+v, want %d", mtu, row.mtu)
			}
		})
	}
}

func TestAdvertisementRefusesBadParams(t *testing.T) {
	rows := []struct {
		name, want string
		p          func(*ra.Params)
	}{
		{"no prefix", "prefix", func(p *ra.Params) { p.Prefix = netip.Prefix{} }},
		{"IPv4 prefix", "prefix", func(p *ra.Params) { p.Prefix = netip.MustParsePrefix("10.0.13.0/24") }},
		{"IPv4-mapped prefix", "prefix", func(p *ra.Params) { p.Prefix = netip.MustParsePrefix("::ffff:10.0.13.0/120") }},
		{"no MAC", "source MAC", func(p *ra.Params) { p.SourceMAC = nil }},
		{"EUI-64 MAC", "source MAC", func(p *ra.Params) { p.SourceMAC = make(net.HardwareAddr, 8) }},
		{"MTU below IPv6 minimum", "MTU 1279", func(p *ra.Params) { p.MTU = 1279 }},
		{"negative MTU", "MTU -1", func(p *ra.Params) { p.MTU = -1 }},
		{"MTU too large", "MTU 65536", func(p *ra.Params) { p.MTU = 65536 }},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			p := params()
			row.p(&p)
			b, err := ra.Advertisement(p)
			if err == nil || !strings.Contains(err.Error(), row.want) {
				t.Fatalf("Advertisement(%+v) = %x, %v; want an error naming %q", p, b, err, row.want)
			}
		})
	}
}

// The caller's MAC slice is copied, not kept.
func TestAdvertisementCopiesMAC(t *testing.T) {
	p := params()
	p.SourceMAC = append(net.HardwareAddr(nil), portMAC...)
	b, err := ra.Advertisement(p)
	if err != nil {
		t.Fatal(err)
	}
	p.SourceMAC[0] = 0xff
	lla, _, _ := options(t, decode(t, b))
	if lla.Addr.String() != portMAC.String() {
		t.Errorf("link-layer option %s, want %s", lla.Addr, portMAC)
	}
}
