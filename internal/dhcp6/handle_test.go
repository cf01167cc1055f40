package dhcp6_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/tapbridge/tapbridge-cni/internal/dhcp6"
)

var (
	firstIA  = [4]byte{0, 0, 0, 1}
	secondIA = [4]byte{0, 0, 0, 2}
)

func secondIANA(addrs ...netip.Addr) dhcpv6.Modifier {
	return func(d dhcpv6.DHCPv6) {
		ia := &dhcpv6.OptIANA{IaId: secondIA}
		for _, a := range addrs {
			ia.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: net.IP(a.AsSlice())})
		}
		d.AddOption(ia)
	}
}

func iapd(d dhcpv6.DHCPv6) { d.AddOption(&dhcpv6.OptIAPD{IaId: [4]byte{9, 9, 9, 9}}) }

func otherServer() dhcpv6.Modifier {
	return dhcpv6.WithServerID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0xaa}})
}

type exchange struct {
	name   string
	build  func(t testing.TB, s dhcp6.Server) *dhcpv6.Message
	want   dhcp6.Refusal
	typ    dhcpv6.MessageType // of the reply, when one is due
	checks func(t *testing.T, req, rep *dhcpv6.Message)
}

// msgOf is a client message of typ from the guest, with our server ID when
// the type needs one.
func msgOf(typ dhcpv6.MessageType, mods ...dhcpv6.Modifier) func(testing.TB, dhcp6.Server) *dhcpv6.Message {
	return func(t testing.TB, s dhcp6.Server) *dhcpv6.Message {
		base := []dhcpv6.Modifier{clientID(guestMAC)}
		switch typ {
		case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline:
			base = append(base, dhcpv6.WithServerID(s.DUID))
		}
		return message(t, typ, append(base, mods...)...)
	}
}

func lease(t *testing.T, _, rep *dhcpv6.Message) {
	checkLease(t, rep, firstIA, testGuest())
	checkConfig(t, rep)
}

func statusIs(code iana.StatusCode) func(*testing.T, *dhcpv6.Message, *dhcpv6.Message) {
	return func(t *testing.T, _, rep *dhcpv6.Message) {
		checkStatus(t, rep, code)
		if len(rep.Options.IANA()) != 0 {
			t.Errorf("IA_NA in a status-only reply: %s", rep.Summary())
		}
	}
}

func TestHandleAddressExchanges(t *testing.T) {
	S, Q, RN, RB := dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind
	adv, rep := dhcpv6.MessageTypeAdvertise, dhcpv6.MessageTypeReply
	rows := []exchange{
		{name: "solicit", build: msgOf(S, withIA()), typ: adv, checks: func(t *testing.T, req, r *dhcpv6.Message) {
			lease(t, req, r)
			if r.Options.Preference() != 255 {
				t.Errorf("preference %d, want 255", r.Options.Preference())
			}
		}},
		{name: "solicit rapid commit", build: msgOf(S, withIA(), dhcpv6.WithRapidCommit), typ: rep, checks: func(t *testing.T, req, r *dhcpv6.Message) {
			lease(t, req, r)
			if r.GetOneOption(dhcpv6.OptionRapidCommit) == nil {
				t.Error("no Rapid Commit option in the committed Reply")
			}
		}},
		{name: "solicit hint for another address", build: msgOf(S, withIA(otherIP)), want: dhcp6.ForeignAddress, typ: adv, checks: func(t *testing.T, req, r *dhcpv6.Message) {
			lease(t, req, r)
			if n := len(r.Options.OneIANA().Options.Addresses()); n != 1 {
				t.Errorf("%d addresses, want only the guest's: a hint is not withdrawn", n)
			}
		}},
		{name: "solicit own address hint", build: msgOf(S, withIA(guestIP)), typ: adv, checks: lease},
		{name: "solicit IA_PD only", build: msgOf(S, iapd), want: dhcp6.NoIANA, typ: adv, checks: func(t *testing.T, _, r *dhcpv6.Message) {
			// RFC 8415 18.3.9: only the status and the two IDs.
			checkStatus(t, r, iana.StatusNoAddrsAvail)
			if len(r.Options.Options) != 3 {
				t.Errorf("options %s, want only client ID, server ID and status", r.Summary())
			}
		}},
		{name: "request IA_PD only", build: msgOf(Q, iapd), want: dhcp6.NoIANA, typ: rep, checks: func(t *testing.T, _, r *dhcpv6.Message) {
			checkStatus(t, r, iana.StatusNoAddrsAvail)
			pd := r.Options.OneIAPD()
			if pd == nil || pd.IaId != [4]byte{9, 9, 9, 9} || pd.Options.Status() == nil || pd.Options.Status().StatusCode != iana.StatusNoPrefixAvail {
				t.Errorf("IA_PD %v, want IAID 09090909 with NoPrefixAvail", pd)
			}
		}},
		{name: "rebind IA_PD", build: msgOf(RB, withIA(guestIP), iapd), typ: rep, checks: func(t *testing.T, req, r *dhcpv6.Message) {
			lease(t, req, r)
			if pd := r.Options.OneIAPD(); pd == nil || pd.Options.Status().StatusCode != iana.StatusNoBinding {
				t.Errorf("IA_PD %v, want NoBinding", pd)
			}
		}},
		{name: "solicit IA_NA and IA_PD", build: msgOf(S, withIA(), iapd), typ: adv, checks: func(t *testing.T, req, r *dhcpv6.Message) {
			lease(t, req, r)
			if pd := r.Options.OneIAPD(); pd == nil || pd.Options.Status().StatusCode != iana.StatusNoPrefixAvail {
				t.Errorf("IA_PD %v, want NoPrefixAvail", pd)
			}
		}},
		{name: "solicit two IA_NA", build: msgOf(S, withIA(), secondIANA()), typ: adv, checks: func(t *testing.T, req, r *dhcpv6.Message) {
			lease(t, req, r)
			checkIAStatus(t, r, secondIA, iana.StatusNoAddrsAvail)
		}},
		{name: "request", build: msgOf(Q, withIA()), typ: rep, checks: lease},
		{name: "request binding in second IA", build: msgOf(Q, withIA(), secondIANA(guestIP)), typ: rep, checks: func(t *testing.T, _, r *dhcpv6.Message) {
			checkLease(t, r, secondIA, testGuest())
			checkIAStatus(t, r, firstIA, iana.StatusNoAddrsAvail)
		}},
		{name: "renew", build: msgOf(RN, withIA(guestIP)), typ: rep, checks: lease},
		{name: "renew old address", build: msgOf(RN, withIA(otherIP)), want: dhcp6.ForeignAddress, typ: rep, checks: func(t *testing.T, req, r *dhcpv6.Message) {
			lease(t, req, r)
			checkWithdrawn(t, r, otherIP)
		}},
		{name: "renew second IA", build: msgOf(RN, withIA(guestIP), secondIANA()), typ: rep, checks: func(t *testing.T, req, r *dhcpv6.Message) {
			lease(t, req, r)
			checkIAStatus(t, r, secondIA, iana.StatusNoBinding)
		}},
		{name: "renew without IA_NA", build: msgOf(RN), want: dhcp6.NoIANA, typ: rep, checks: func(t *testing.T, _, r *dhcpv6.Message) {
			checkStatus(t, r, iana.StatusNoBinding)
		}},
		{name: "rebind", build: msgOf(RB, withIA(guestIP)), typ: rep, checks: lease},
		{name: "rebind both addresses", build: msgOf(RB, withIA(guestIP, otherIP)), want: dhcp6.ForeignAddress, typ: rep, checks: func(t *testing.T, req, r *dhcpv6.Message) {
			lease(t, req, r)
			checkWithdrawn(t, r, otherIP)
		}},
	}
	run(t, rows)
}

func TestHandleStatusExchanges(t *testing.T) {
	rep := dhcpv6.MessageTypeReply
	C := dhcpv6.MessageTypeConfirm
	rows := []exchange{
		{name: "confirm own address", build: msgOf(C, withIA(guestIP)), typ: rep, checks: statusIs(iana.StatusSuccess)},
		{name: "confirm another address", build: msgOf(C, withIA(otherIP)), want: dhcp6.ForeignAddress, typ: rep, checks: statusIs(iana.StatusNotOnLink)},
		{name: "confirm own and another", build: msgOf(C, withIA(guestIP), secondIANA(otherIP)), want: dhcp6.ForeignAddress, typ: rep, checks: statusIs(iana.StatusNotOnLink)},
		{name: "confirm without addresses", build: msgOf(C, withIA()), want: dhcp6.Invalid},
		{name: "release", build: msgOf(dhcpv6.MessageTypeRelease, withIA(guestIP)), typ: rep, checks: statusIs(iana.StatusSuccess)},
		{name: "decline", build: msgOf(dhcpv6.MessageTypeDecline, withIA(guestIP)), want: dhcp6.Declined, typ: rep, checks: statusIs(iana.StatusSuccess)},
		{name: "information-request", build: msgOf(dhcpv6.MessageTypeInformationRequest), typ: rep, checks: func(t *testing.T, _, r *dhcpv6.Message) {
			checkConfig(t, r)
			if len(r.Options.IANA()) != 0 || r.Options.Status() != nil {
				t.Errorf("information reply with IA or status: %s", r.Summary())
			}
		}},
		{name: "information-request anonymous", build: func(t testing.TB, _ dhcp6.Server) *dhcpv6.Message {
			return message(t, dhcpv6.MessageTypeInformationRequest)
		}, typ: rep, checks: func(t *testing.T, _, r *dhcpv6.Message) { checkConfig(t, r) }},
		{name: "information-request to us", build: func(t testing.TB, s dhcp6.Server) *dhcpv6.Message {
			return message(t, dhcpv6.MessageTypeInformationRequest, dhcpv6.WithServerID(s.DUID))
		}, typ: rep, checks: func(t *testing.T, _, r *dhcpv6.Message) { checkConfig(t, r) }},
	}
	run(t, rows)
}

func TestHandleRefusals(t *testing.T) {
	S, Q := dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRequest
	duid := func(d dhcpv6.DUID) dhcpv6.Modifier { return dhcpv6.WithClientID(d) }
	rows := []exchange{
		{name: "solicit with server ID", build: msgOf(S, withIA(), otherServer()), want: dhcp6.Invalid},
		{name: "solicit without client ID", build: func(t testing.TB, _ dhcp6.Server) *dhcpv6.Message { return message(t, S, withIA()) }, want: dhcp6.Invalid},
		{name: "request without server ID", build: func(t testing.TB, _ dhcp6.Server) *dhcpv6.Message {
			return message(t, Q, clientID(guestMAC), withIA())
		}, want: dhcp6.Invalid},
		{name: "request to another server", build: msgOf(Q, withIA(), otherServer()), want: dhcp6.NotForUs},
		{name: "renew to another server", build: msgOf(dhcpv6.MessageTypeRenew, withIA(guestIP), otherServer()), want: dhcp6.NotForUs},
		{name: "release to another server", build: msgOf(dhcpv6.MessageTypeRelease, withIA(guestIP), otherServer()), want: dhcp6.NotForUs},
		{name: "rebind with server ID", build: msgOf(dhcpv6.MessageTypeRebind, withIA(guestIP), dhcpv6.WithServerID(testServer(t).DUID)), want: dhcp6.Invalid},
		{name: "confirm with server ID", build: msgOf(dhcpv6.MessageTypeConfirm, withIA(guestIP), dhcpv6.WithServerID(testServer(t).DUID)), want: dhcp6.Invalid},
		{name: "information-request with IA_NA", build: msgOf(dhcpv6.MessageTypeInformationRequest, withIA()), want: dhcp6.Invalid},
		{name: "information-request to another server", build: msgOf(dhcpv6.MessageTypeInformationRequest, otherServer()), want: dhcp6.NotForUs},
		{name: "DUID-LLT of another MAC (a second NIC)", build: msgOf(S, withIA(), clientID(net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1})), typ: dhcpv6.MessageTypeAdvertise, checks: lease},
		{name: "DUID-LL of another MAC", build: msgOf(S, withIA(), duid(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}})), typ: dhcpv6.MessageTypeAdvertise, checks: lease},
		{name: "DUID-LL of the guest", build: msgOf(S, withIA(), duid(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: guestMAC})), typ: dhcpv6.MessageTypeAdvertise, checks: lease},
		{name: "DUID-EN", build: msgOf(S, withIA(), duid(&dhcpv6.DUIDEN{EnterpriseNumber: 43793, EnterpriseIdentifier: []byte{1, 2, 3, 4, 5, 6, 7, 8}})), typ: dhcpv6.MessageTypeAdvertise, checks: lease},
		{name: "DUID-UUID", build: msgOf(S, withIA(), duid(&dhcpv6.DUIDUUID{UUID: [16]byte{1, 2, 3}})), typ: dhcpv6.MessageTypeAdvertise, checks: lease},
		{name: "DUID of unknown type", build: msgOf(S, withIA(), duid(&dhcpv6.DUIDOpaque{Type: 77, Data: []byte{1, 2}})), typ: dhcpv6.MessageTypeAdvertise, checks: lease},
		{name: "advertise from a guest", build: msgOf(dhcpv6.MessageTypeAdvertise, withIA()), want: dhcp6.UnsupportedType},
		{name: "reply from a guest", build: msgOf(dhcpv6.MessageTypeReply, withIA()), want: dhcp6.UnsupportedType},
		{name: "reconfigure", build: msgOf(dhcpv6.MessageTypeReconfigure), want: dhcp6.UnsupportedType},
		{name: "leasequery", build: msgOf(dhcpv6.MessageTypeLeaseQuery), want: dhcp6.UnsupportedType},
	}
	run(t, rows)
}

func run(t *testing.T, rows []exchange) {
	t.Helper()
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			s := testServer(t)
			req := row.build(t, s)
			rep, r := handle(t, s, testGuest(), req.ToBytes())
			if r != row.want {
				t.Fatalf("refusal %s, want %s", r, row.want)
			}
			if rep == nil {
				return
			}
			checkHeader(t, s, req, rep, row.typ)
			if row.checks != nil {
				row.checks(t, req, rep)
			}
		})
	}
}

func checkIAStatus(t *testing.T, rep *dhcpv6.Message, iaid [4]byte, want iana.StatusCode) {
	t.Helper()
	for _, ia := range rep.Options.IANA() {
		if ia.IaId != iaid {
			continue
		}
		if st := ia.Options.Status(); st == nil || st.StatusCode != want || len(ia.Options.Addresses()) != 0 {
			t.Errorf("IA_NA %x: %s, want no address and status %s", iaid, ia, want)
		}
		return
	}
	t.Errorf("no IA_NA %x in %s", iaid, rep.Summary())
}

func checkWithdrawn(t *testing.T, rep *dhcpv6.Message, addr netip.Addr) {
	t.Helper()
	for _, a := range rep.Options.OneIANA().Options.Addresses() {
		if a.IPv6Addr.Equal(net.IP(addr.AsSlice())) {
			if a.ValidLifetime != 0 || a.PreferredLifetime != 0 {
				t.Errorf("%s returned with lifetimes %s/%s, want 0", addr, a.PreferredLifetime, a.ValidLifetime)
			}
			return
		}
	}
	t.Errorf("%s not returned with lifetime 0: %s", addr, rep.Summary())
}

func TestHandleBadInput(t *testing.T) {
	s := testServer(t)
	sol := message(t, dhcpv6.MessageTypeSolicit, clientID(guestMAC), withIA()).ToBytes()
	relay, err := dhcpv6.EncapsulateRelay(message(t, dhcpv6.MessageTypeSolicit, clientID(guestMAC), withIA()),
		dhcpv6.MessageTypeRelayForward, net.ParseIP("fe80::1"), net.ParseIP("fe80::2"))
	if err != nil {
		t.Fatal(err)
	}
	relayRepl, _ := dhcpv6.EncapsulateRelay(message(t, dhcpv6.MessageTypeReply, clientID(guestMAC)),
		dhcpv6.MessageTypeRelayReply, net.ParseIP("fe80::1"), net.ParseIP("fe80::2"))
	// A padding option keeps the message valid at any length.
	padded := func(n int) []byte {
		m := message(t, dhcpv6.MessageTypeSolicit, clientID(guestMAC), withIA())
		m.AddOption(&dhcpv6.OptionGeneric{OptionCode: 65000, OptionData: make([]byte, n-len(m.ToBytes())-4)})
		return m.ToBytes()
	}
	rows := []struct {
		name string
		in   []byte
		want dhcp6.Refusal
	}{
		{"empty", nil, dhcp6.Malformed},
		{"type only", []byte{1}, dhcp6.Malformed},
		{"short header", []byte{1, 2, 3}, dhcp6.Malformed},
		{"header only", []byte{1, 2, 3, 4}, dhcp6.Invalid},
		{"option header cut", append(append([]byte{}, sol...), 0, 1), dhcp6.Malformed},
		{"option longer than message", append(append([]byte{}, sol...), 0, 1, 0, 50, 1), dhcp6.Malformed},
		{"client ID cut", sol[:4+4+3], dhcp6.Malformed},
		{"bad IA_NA", append([]byte{1, 2, 3, 4, 0, 3, 0, 2, 1, 2}, sol[4:]...), dhcp6.Malformed},
		{"bad IA address", append(append([]byte{}, sol...), 0, 3, 0, 17, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 1, 9), dhcp6.Malformed},
		{"relay-forw", relay.ToBytes(), dhcp6.Relayed},
		{"relay-repl", relayRepl.ToBytes(), dhcp6.Relayed},
		{"relay header cut", relay.ToBytes()[:20], dhcp6.Malformed},
		{"garbage", bytes.Repeat([]byte{0xff}, 64), dhcp6.Malformed},
		{"largest", padded(dhcp6.MaxMessage), dhcp6.None},
		{"oversized", padded(dhcp6.MaxMessage + 1), dhcp6.Oversized},
		{"huge", make([]byte, 1<<20), dhcp6.Oversized},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			if _, r := handle(t, s, testGuest(), row.in); r != row.want {
				t.Fatalf("refusal %s, want %s", r, row.want)
			}
		})
	}
}

// Every prefix of a valid exchange is either refused or answered with a
// reply that decodes: truncation never panics or answers garbage.
func TestHandleTruncated(t *testing.T) {
	s := testServer(t)
	for _, m := range seeds(t, s) {
		for n := range len(m) {
			handle(t, s, testGuest(), m[:n])
		}
	}
}

func TestHandleGuestAndServer(t *testing.T) {
	sol := message(t, dhcpv6.MessageTypeSolicit, clientID(guestMAC), withIA()).ToBytes()
	noAddr := testGuest()
	noAddr.Addr = netip.Addr{}
	v4 := testGuest()
	v4.Addr = netip.MustParseAddr("10.0.13.15")
	mapped := testGuest()
	mapped.Addr = netip.MustParseAddr("::ffff:10.0.13.15")
	rows := []struct {
		name string
		s    dhcp6.Server
		g    dhcp6.Guest
		want dhcp6.Refusal
	}{
		{"no address", testServer(t), noAddr, dhcp6.NoAddress},
		{"IPv4 address", testServer(t), v4, dhcp6.NoAddress},
		{"IPv4-mapped address", testServer(t), mapped, dhcp6.NoAddress},
		{"link-local address", testServer(t), withAddr("fe80::15"), dhcp6.NoAddress},
		{"multicast address", testServer(t), withAddr("ff02::1:2"), dhcp6.NoAddress},
		{"unspecified address", testServer(t), withAddr("::"), dhcp6.NoAddress},
		{"server without DUID", dhcp6.Server{}, testGuest(), dhcp6.NoServerID},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			if _, r := handle(t, row.s, row.g, sol); r != row.want {
				t.Fatalf("refusal %s, want %s", r, row.want)
			}
		})
	}
}

func TestNewServer(t *testing.T) {
	s := testServer(t)
	ll, ok := s.DUID.(*dhcpv6.DUIDLL)
	if !ok || ll.HWType != iana.HWTypeEthernet || !bytes.Equal(ll.LinkLayerAddr, portMAC) {
		t.Fatalf("DUID %v, want DUID-LL of %s", s.DUID, portMAC)
	}
	for _, bad := range []net.HardwareAddr{nil, {1, 2, 3}, make(net.HardwareAddr, 20)} {
		if _, err := dhcp6.NewServer(bad); err == nil {
			t.Errorf("NewServer(%q): no error", bad)
		}
	}
}

func withAddr(a string) dhcp6.Guest {
	g := testGuest()
	g.Addr = netip.MustParseAddr(a)
	return g
}

// Every node's agent names a network's server alike, so a migrated guest's
// Renew (naming the server of its old node) is answered on its new node;
// another network's server is another.
func TestNetworkServerIsTheSameOnEveryNode(t *testing.T) {
	a, err := dhcp6.NewNetworkServer("vmnet3")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := dhcp6.NewNetworkServer("vmnet3")
	c, _ := dhcp6.NewNetworkServer("vmnet13")
	if !bytes.Equal(a.DUID.ToBytes(), b.DUID.ToBytes()) || bytes.Equal(a.DUID.ToBytes(), c.DUID.ToBytes()) {
		t.Fatalf("DUIDs: vmnet3 %x and %x, vmnet13 %x", a.DUID.ToBytes(), b.DUID.ToBytes(), c.DUID.ToBytes())
	}
	if _, err := dhcp6.NewNetworkServer(""); err == nil {
		t.Fatal("a server for no network")
	}
	g := testGuest()
	renew := message(t, dhcpv6.MessageTypeRenew, clientID(guestMAC), withIA(guestIP), dhcpv6.WithServerID(a.DUID))
	reply, r := b.Handle(g, renew.ToBytes())
	if reply == nil || r != dhcp6.None {
		t.Fatalf("Renew naming the same network's server on another node: refusal %v", r)
	}
	if _, r := c.Handle(g, renew.ToBytes()); r != dhcp6.NotForUs {
		t.Fatalf("Renew naming another network's server: refusal %v, want not-for-us", r)
	}
}
