package dhcp4

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzHandle: any bytes a guest sends get an answer or a refusal, never a
// panic, and an answer is always a message the library reads back and
// addressed to the guest (or a broadcast NAK).
func FuzzHandle(f *testing.F) {
	for _, typ := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform, dhcpv4.MessageTypeRelease} {
		m, _ := dhcpv4.New(dhcpv4.WithHwAddr(guestMAC), dhcpv4.WithMessageType(typ),
			dhcpv4.WithClientIP(net.ParseIP("10.1.0.7")),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.1.0.7"))))
		f.Add(m.ToBytes())
	}
	f.Add([]byte{})
	h, err := NewHandler(testGuest(), serverID)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		r := h.Handle(payload)
		if r.Reply == nil {
			return
		}
		if r.Refusal != None && r.Refusal != ForeignAddress {
			t.Fatalf("reply %s with refusal %v", r.Reply.Type, r.Refusal)
		}
		if _, err := dhcpv4.FromBytes(r.Reply.Payload); err != nil {
			t.Fatalf("reply does not decode: %v", err)
		}
	})
}
