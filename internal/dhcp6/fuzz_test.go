package dhcp6_test

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/tapbridge/tapbridge-cni/internal/dhcp6"
)

// seeds are one valid message of every kind a client sends, and some of
// the refused ones.
func seeds(t testing.TB, s dhcp6.Server) [][]byte {
	sid := dhcpv6.WithServerID(s.DUID)
	msgs := []*dhcpv6.Message{
		message(t, dhcpv6.MessageTypeSolicit, clientID(guestMAC), withIA(), dhcpv6.WithRequestedOptions(dhcpv6.OptionDNSRecursiveNameServer)),
		message(t, dhcpv6.MessageTypeSolicit, clientID(guestMAC), withIA(otherIP), dhcpv6.WithRapidCommit, iapd),
		message(t, dhcpv6.MessageTypeRequest, clientID(guestMAC), sid, withIA(guestIP)),
		message(t, dhcpv6.MessageTypeRenew, clientID(guestMAC), sid, withIA(guestIP, otherIP), secondIANA(otherIP)),
		message(t, dhcpv6.MessageTypeRebind, clientID(guestMAC), withIA(otherIP)),
		message(t, dhcpv6.MessageTypeConfirm, clientID(guestMAC), withIA(guestIP)),
		message(t, dhcpv6.MessageTypeRelease, clientID(guestMAC), sid, withIA(guestIP)),
		message(t, dhcpv6.MessageTypeDecline, clientID(guestMAC), sid, withIA(guestIP)),
		message(t, dhcpv6.MessageTypeInformationRequest, dhcpv6.WithClientID(&dhcpv6.DUIDEN{EnterpriseNumber: 1, EnterpriseIdentifier: []byte{1}})),
		message(t, dhcpv6.MessageTypeSolicit, dhcpv6.WithClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{1, 2, 3, 4, 5, 6}}), withIA()),
	}
	out := make([][]byte, 0, len(msgs)+1)
	for _, m := range msgs {
		out = append(out, m.ToBytes())
	}
	relay, err := dhcpv6.EncapsulateRelay(msgs[0], dhcpv6.MessageTypeRelayForward, net.IPv6loopback, net.IPv6loopback)
	if err != nil {
		t.Fatal(err)
	}
	return append(out, relay.ToBytes())
}

// FuzzHandle: whatever a guest sends, Handle does not panic, answers
// exactly when its refusal says so, and an answer decodes, is a server
// message for the same transaction from this server, and grants no address
// but the guest's (others only come back with lifetime 0, to withdraw them).
func FuzzHandle(f *testing.F) {
	s := testServer(f)
	for _, m := range seeds(f, s) {
		f.Add(m)
	}
	g := testGuest()
	f.Fuzz(func(t *testing.T, in []byte) {
		rep, r := handle(t, s, g, in)
		if r.String() == "unknown" {
			t.Fatalf("refusal %d outside the listed reasons", r)
		}
		if rep == nil {
			return
		}
		if rep.MessageType != dhcpv6.MessageTypeAdvertise && rep.MessageType != dhcpv6.MessageTypeReply {
			t.Fatalf("reply of type %s", rep.MessageType)
		}
		req, err := dhcpv6.MessageFromBytes(in)
		if err != nil {
			t.Fatalf("answered a message that does not decode: %v", err)
		}
		checkHeader(t, s, req, rep, rep.MessageType)
		checkGrants(t, rep)
	})
}

// checkGrants fails on any address in the reply, in any IA, that is not
// the guest's and has a non-zero lifetime.
func checkGrants(t *testing.T, rep *dhcpv6.Message) {
	t.Helper()
	if len(rep.Options.IATA()) != 0 {
		t.Errorf("IA_TA in reply: %s", rep.Summary())
	}
	for _, pd := range rep.Options.IAPD() {
		if len(pd.Options.Prefixes()) != 0 {
			t.Errorf("delegated prefix in reply: %s", rep.Summary())
		}
	}
	for _, ia := range rep.Options.IANA() {
		for _, a := range ia.Options.Addresses() {
			if a.IPv6Addr.Equal(net.IP(guestIP.AsSlice())) {
				continue
			}
			if a.ValidLifetime != 0 || a.PreferredLifetime != 0 {
				t.Errorf("reply grants %s: %s", a.IPv6Addr, rep.Summary())
			}
		}
	}
}
