package dhcp6_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/tapbridge/tapbridge-cni/internal/dhcp6"
)

var (
	guestMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	portMAC  = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0xfe}
	guestIP  = netip.MustParseAddr("fd00:13::15")
	otherIP  = netip.MustParseAddr("fd00:13::99")
)

func testGuest() dhcp6.Guest {
	return dhcp6.Guest{
		MAC:      guestMAC,
		Addr:     guestIP,
		DNS:      []netip.Addr{netip.MustParseAddr("fd00:13::53"), netip.MustParseAddr("10.0.0.53"), netip.MustParseAddr("fd00:13::54")},
		Search:   []string{"vm.example.org", "example.org."},
		Lifetime: 2 * time.Hour,
	}
}

func testServer(t testing.TB) dhcp6.Server {
	t.Helper()
	s, err := dhcp6.NewServer(portMAC)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// answered are the refusals that come with a reply; every other one means
// nothing is sent.
var answered = map[dhcp6.Refusal]bool{
	dhcp6.None: true, dhcp6.ForeignAddress: true, dhcp6.NoIANA: true, dhcp6.Declined: true,
}

// handle runs Handle and checks the contract every caller relies on: a
// reply exactly when the refusal says one is due, and a reply that decodes.
func handle(t testing.TB, s dhcp6.Server, g dhcp6.Guest, req []byte) (*dhcpv6.Message, dhcp6.Refusal) {
	t.Helper()
	out, r := s.Handle(g, req)
	if answered[r] != (out != nil) {
		t.Fatalf("refusal %s with reply %v: a reply must come exactly with none/foreign-address/no-ia-na/declined", r, out != nil)
	}
	if out == nil {
		return nil, r
	}
	msg, err := dhcpv6.MessageFromBytes(out)
	if err != nil {
		t.Fatalf("reply does not decode: %v\n%x", err, out)
	}
	return msg, r
}

// checkHeader asserts what every reply to req carries: the transaction,
// our server ID, and the client ID exactly as the client sent it.
func checkHeader(t testing.TB, s dhcp6.Server, req, rep *dhcpv6.Message, want dhcpv6.MessageType) {
	t.Helper()
	if rep.MessageType != want {
		t.Fatalf("reply type %s, want %s", rep.MessageType, want)
	}
	if rep.TransactionID != req.TransactionID {
		t.Errorf("transaction %s, want %s", rep.TransactionID, req.TransactionID)
	}
	if sid := rep.Options.ServerID(); sid == nil || !bytes.Equal(sid.ToBytes(), s.DUID.ToBytes()) {
		t.Errorf("server ID %v, want %v", sid, s.DUID)
	}
	want6 := req.GetOneOption(dhcpv6.OptionClientID)
	got := rep.GetOneOption(dhcpv6.OptionClientID)
	switch {
	case want6 == nil && got != nil:
		t.Errorf("client ID %v in reply to a message without one", got)
	case want6 != nil && (got == nil || !bytes.Equal(got.ToBytes(), want6.ToBytes())):
		t.Errorf("client ID %v, want %v echoed", got, want6)
	}
}

// checkLease asserts the reply's IA_NA with iaid holds the guest's address
// with the guest's lifetimes, and nothing else with a non-zero lifetime.
func checkLease(t testing.TB, rep *dhcpv6.Message, iaid [4]byte, g dhcp6.Guest) {
	t.Helper()
	var ia *dhcpv6.OptIANA
	for _, x := range rep.Options.IANA() {
		if x.IaId == iaid {
			ia = x
		}
	}
	if ia == nil {
		t.Fatalf("no IA_NA %x in %s", iaid, rep.Summary())
	}
	valid := g.Lifetime
	if ia.T1 != valid/2 || ia.T2 != valid*4/5 {
		t.Errorf("T1/T2 %s/%s, want %s/%s", ia.T1, ia.T2, valid/2, valid*4/5)
	}
	if st := ia.Options.Status(); st != nil && st.StatusCode != iana.StatusSuccess {
		t.Errorf("IA_NA status %s", st)
	}
	n := 0
	for _, a := range ia.Options.Addresses() {
		if !a.IPv6Addr.Equal(net.IP(g.Addr.AsSlice())) {
			if a.ValidLifetime != 0 || a.PreferredLifetime != 0 {
				t.Errorf("foreign address %s with lifetimes %s/%s", a.IPv6Addr, a.PreferredLifetime, a.ValidLifetime)
			}
			continue
		}
		n++
		if a.ValidLifetime != valid || a.PreferredLifetime != valid {
			t.Errorf("lifetimes %s/%s, want %s/%s", a.PreferredLifetime, a.ValidLifetime, valid, valid)
		}
	}
	if n != 1 {
		t.Errorf("guest address %d times in IA_NA, want once: %s", n, ia)
	}
}

// checkConfig asserts the reply carries the guest's IPv6 DNS servers and
// its search list, nothing more.
func checkConfig(t testing.TB, rep *dhcpv6.Message) {
	t.Helper()
	dns := rep.Options.DNS()
	if len(dns) != 2 || !dns[0].Equal(net.ParseIP("fd00:13::53")) || !dns[1].Equal(net.ParseIP("fd00:13::54")) {
		t.Errorf("DNS %v, want [fd00:13::53 fd00:13::54] (the IPv4 one dropped)", dns)
	}
	sl := rep.Options.DomainSearchList()
	if sl == nil || len(sl.Labels) != 2 || sl.Labels[0] != "vm.example.org" || sl.Labels[1] != "example.org" {
		t.Errorf("search list %v, want [vm.example.org example.org]", sl)
	}
}

func checkStatus(t testing.TB, rep *dhcpv6.Message, want iana.StatusCode) {
	t.Helper()
	st := rep.Options.Status()
	if st == nil || st.StatusCode != want {
		t.Errorf("status %v, want %s", st, want)
	}
}

// message builds a client message of type typ the way a client would.
func message(t testing.TB, typ dhcpv6.MessageType, mods ...dhcpv6.Modifier) *dhcpv6.Message {
	t.Helper()
	m, err := dhcpv6.NewMessage(mods...)
	if err != nil {
		t.Fatal(err)
	}
	m.MessageType = typ
	return m
}

func clientID(mac net.HardwareAddr) dhcpv6.Modifier {
	return dhcpv6.WithClientID(&dhcpv6.DUIDLLT{HWType: iana.HWTypeEthernet, Time: 7, LinkLayerAddr: mac})
}

func withIA(addrs ...netip.Addr) dhcpv6.Modifier {
	return func(d dhcpv6.DHCPv6) {
		ia := &dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, 1}}
		for _, a := range addrs {
			ia.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: net.IP(a.AsSlice()), ValidLifetime: time.Hour, PreferredLifetime: time.Hour})
		}
		d.AddOption(ia)
	}
}
