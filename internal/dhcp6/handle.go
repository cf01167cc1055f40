package dhcp6

import (
	"bytes"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// MaxMessage bounds the client messages that are decoded at all: the UDP
// payload of a 1500-byte IPv6 packet. Real clients send a few hundred bytes;
// the bound keeps a flooding guest's cost per message small.
const MaxMessage = 1500 - 40 - 8

// Handle answers one client message of guest g. payload is the UDP payload
// the guest sent to port 547; reply is the UDP payload for the guest's port
// 546, nil when nothing is due. r says why there is no reply, or why the
// reply is not the one asked for; it is None for a plain answer.
func (s Server) Handle(g Guest, payload []byte) (reply []byte, r Refusal) {
	if len(payload) > MaxMessage {
		return nil, Oversized
	}
	if _, ok := g.address(); !ok {
		return nil, NoAddress
	}
	if s.DUID == nil {
		return nil, NoServerID
	}
	msg, r := decode(payload)
	if r != None {
		return nil, r
	}
	if r := s.admit(g, msg); r != None {
		return nil, r
	}
	out, r := s.answer(g, msg)
	if out == nil {
		return nil, r
	}
	return out.ToBytes(), r
}

// decode parses a client message; relay wrappers are refused unopened.
func decode(payload []byte) (*dhcpv6.Message, Refusal) {
	d, err := dhcpv6.FromBytes(payload)
	if err != nil {
		return nil, Malformed
	}
	if d.IsRelay() {
		return nil, Relayed
	}
	msg, ok := d.(*dhcpv6.Message)
	if !ok {
		return nil, Malformed
	}
	return msg, None
}

// presence says whether an identifier option must, may or must not appear.
type presence uint8

const (
	forbidden presence = iota
	optional
	required
)

// rule is RFC 8415 section 16's validation of one client message type.
type rule struct{ client, server presence }

var rules = map[dhcpv6.MessageType]rule{
	dhcpv6.MessageTypeSolicit:            {client: required, server: forbidden},
	dhcpv6.MessageTypeRequest:            {client: required, server: required},
	dhcpv6.MessageTypeConfirm:            {client: required, server: forbidden},
	dhcpv6.MessageTypeRenew:              {client: required, server: required},
	dhcpv6.MessageTypeRebind:             {client: required, server: forbidden},
	dhcpv6.MessageTypeDecline:            {client: required, server: required},
	dhcpv6.MessageTypeRelease:            {client: required, server: required},
	dhcpv6.MessageTypeInformationRequest: {client: optional, server: optional},
}

// admit applies the RFC's discard rules, then this server's: the message
// must name this server when it names one. The client's DUID is not held
// against the guest's MAC: the agent has matched the frame's port and
// Ethernet source to the guest already, the reply can only carry the
// guest's own address, and RFC 8415 wants one DUID per device, so a guest
// with two NICs on served networks presents, on the second, a DUID-LL(T)
// made from the first NIC's MAC (dhclient and dhcpcd do).
func (s Server) admit(g Guest, msg *dhcpv6.Message) Refusal {
	rl, ok := rules[msg.Type()]
	if !ok {
		return UnsupportedType
	}
	client, server := msg.Options.ClientID(), msg.Options.ServerID()
	if !allowed(rl.client, client != nil) || !allowed(rl.server, server != nil) {
		return Invalid
	}
	if msg.Type() == dhcpv6.MessageTypeInformationRequest && hasIA(msg) {
		return Invalid
	}
	if server != nil && !bytes.Equal(server.ToBytes(), s.DUID.ToBytes()) {
		return NotForUs
	}
	return None
}

func allowed(p presence, present bool) bool {
	return p == optional || present == (p == required)
}

func hasIA(msg *dhcpv6.Message) bool {
	return msg.GetOneOption(dhcpv6.OptionIANA) != nil ||
		msg.GetOneOption(dhcpv6.OptionIATA) != nil ||
		msg.GetOneOption(dhcpv6.OptionIAPD) != nil
}
