package dhcp6_test

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/tapbridge/tapbridge-cni/internal/dhcp6"
)

func TestLifetimes(t *testing.T) {
	rows := []struct {
		name          string
		lifetime      time.Duration
		valid, t1, t2 time.Duration
	}{
		{"unset", 0, time.Hour, 30 * time.Minute, 48 * time.Minute},
		{"negative", -time.Second, time.Hour, 30 * time.Minute, 48 * time.Minute},
		{"under a second", time.Millisecond, time.Hour, 30 * time.Minute, 48 * time.Minute},
		{"fractional seconds dropped", 101*time.Second + 900*time.Millisecond, 101 * time.Second, 50 * time.Second, 80 * time.Second},
		{"one day", 24 * time.Hour, 24 * time.Hour, 12 * time.Hour, 24 * time.Hour * 4 / 5},
		{"beyond 32 bits", 1 << 62, 0xfffffffe * time.Second, 0x7fffffff * time.Second, 0xfffffffe * 4 / 5 * time.Second},
	}
	s := testServer(t)
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			g := testGuest()
			g.Lifetime = row.lifetime
			req := message(t, dhcpv6.MessageTypeRequest, clientID(guestMAC), dhcpv6.WithServerID(s.DUID), withIA())
			rep, r := handle(t, s, g, req.ToBytes())
			if r != dhcp6.None {
				t.Fatalf("refusal %s", r)
			}
			ia := rep.Options.OneIANA()
			a := ia.Options.OneAddress()
			if a.ValidLifetime != row.valid || a.PreferredLifetime != row.valid || ia.T1 != row.t1 || ia.T2 != row.t2 {
				t.Errorf("valid/preferred/T1/T2 = %s/%s/%s/%s, want %s/%s/%s/%s",
					a.ValidLifetime, a.PreferredLifetime, ia.T1, ia.T2, row.valid, row.valid, row.t1, row.t2)
			}
		})
	}
}

func TestConfigFiltering(t *testing.T) {
	s := testServer(t)
	long := strings.Repeat("a", 64) // one byte over a DNS label
	rows := []struct {
		name   string
		dns    []netip.Addr
		search []string
		wantNS []string
		wantSL []string
	}{
		{"none", nil, nil, nil, nil},
		{"IPv4 only", []netip.Addr{netip.MustParseAddr("10.0.0.53"), netip.MustParseAddr("::ffff:10.0.0.53")}, nil, nil, nil},
		{"bad names dropped", nil, []string{"", ".", "a..b", long + ".org", "ok.example", "x.", "a.b."}, nil, []string{"ok.example", "x", "a.b"}},
		{"zone dropped", []netip.Addr{netip.MustParseAddr("fe80::53%eth0")}, nil, []string{"fe80::53"}, nil},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			g := testGuest()
			g.DNS, g.Search = row.dns, row.search
			req := message(t, dhcpv6.MessageTypeInformationRequest, clientID(guestMAC))
			rep, _ := handle(t, s, g, req.ToBytes())
			var ns []string
			for _, ip := range rep.Options.DNS() {
				ns = append(ns, ip.String())
			}
			if !slices.Equal(ns, row.wantNS) {
				t.Errorf("DNS %v, want %v", ns, row.wantNS)
			}
			var sl []string
			if l := rep.Options.DomainSearchList(); l != nil {
				sl = l.Labels
			}
			if !slices.Equal(sl, row.wantSL) {
				t.Errorf("search %v, want %v", sl, row.wantSL)
			}
			if row.wantNS == nil && rep.GetOneOption(dhcpv6.OptionDNSRecursiveNameServer) != nil {
				t.Error("empty DNS option sent")
			}
		})
	}
}

// The guest's address in a zoned or 4-byte form still matches what the
// client sends, and the reply carries the 16-byte form.
func TestGuestAddressForms(t *testing.T) {
	s := testServer(t)
	g := testGuest()
	g.Addr = netip.MustParseAddr("fd00:13::15%pod1")
	req := message(t, dhcpv6.MessageTypeRenew, clientID(guestMAC), dhcpv6.WithServerID(s.DUID), withIA(guestIP))
	rep, r := handle(t, s, g, req.ToBytes())
	if r != dhcp6.None {
		t.Fatalf("refusal %s", r)
	}
	if a := rep.Options.OneIANA().Options.OneAddress(); !a.IPv6Addr.Equal(net.ParseIP("fd00:13::15")) || len(rep.Options.OneIANA().Options.Addresses()) != 1 {
		t.Errorf("IA_NA %s, want only fd00:13::15", rep.Options.OneIANA())
	}
}
