package dhcp6_test

import (
	"slices"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/tapbridge/tapbridge-cni/internal/dhcp6"
)

func TestReasons(t *testing.T) {
	rs := dhcp6.Reasons()
	want := []string{"oversized", "no-address", "no-server-id", "malformed", "relayed", "unsupported-type",
		"invalid", "not-for-us", "foreign-address", "no-ia-na", "declined"}
	var got []string
	for _, r := range rs {
		got = append(got, r.String())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Reasons() = %v, want %v", got, want)
	}
	if dhcp6.None.String() != "none" || slices.Contains(rs, dhcp6.None) {
		t.Errorf("None is %q and listed=%v; want \"none\", not listed", dhcp6.None, slices.Contains(rs, dhcp6.None))
	}
	if s := dhcp6.Refusal(200).String(); s != "unknown" {
		t.Errorf("Refusal(200) = %q, want unknown", s)
	}
}

func TestKind(t *testing.T) {
	rows := []struct {
		in   []byte
		want string
	}{
		{nil, dhcp6.KindOther},
		{[]byte{byte(dhcpv6.MessageTypeSolicit)}, "solicit"},
		{[]byte{byte(dhcpv6.MessageTypeRequest), 1, 2, 3}, "request"},
		{[]byte{byte(dhcpv6.MessageTypeConfirm)}, "confirm"},
		{[]byte{byte(dhcpv6.MessageTypeRenew)}, "renew"},
		{[]byte{byte(dhcpv6.MessageTypeRebind)}, "rebind"},
		{[]byte{byte(dhcpv6.MessageTypeRelease)}, "release"},
		{[]byte{byte(dhcpv6.MessageTypeDecline)}, "decline"},
		{[]byte{byte(dhcpv6.MessageTypeInformationRequest)}, "information-request"},
		{[]byte{byte(dhcpv6.MessageTypeRelayForward)}, "relay-forw"},
		{[]byte{byte(dhcpv6.MessageTypeAdvertise)}, dhcp6.KindOther},
		{[]byte{byte(dhcpv6.MessageTypeRelayReply)}, dhcp6.KindOther},
		{[]byte{0}, dhcp6.KindOther},
		{[]byte{255}, dhcp6.KindOther},
	}
	kinds := dhcp6.Kinds()
	for _, row := range rows {
		got := dhcp6.Kind(row.in)
		if got != row.want {
			t.Errorf("Kind(%x) = %q, want %q", row.in, got, row.want)
		}
		if !slices.Contains(kinds, got) {
			t.Errorf("Kind(%x) = %q is not in Kinds() %v", row.in, got, kinds)
		}
	}
	if len(kinds) != 10 {
		t.Errorf("Kinds() = %v, want the 9 client types and %q", kinds, dhcp6.KindOther)
	}
	// Any first byte maps into the pre-registered set.
	for b := range 256 {
		if k := dhcp6.Kind([]byte{byte(b)}); !slices.Contains(kinds, k) {
			t.Fatalf("Kind(%d) = %q, not in Kinds()", b, k)
		}
	}
}
