package dhcp6

import (
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// Refusal says why a client message got no reply, or a reply other than the
// one it asked for. The agent counts them by String, so the set is fixed.
type Refusal uint8

// The zero Refusal means the message was answered as asked.
const (
	None Refusal = iota
	// Oversized: longer than MaxMessage, refused before parsing.
	Oversized
	// NoAddress: the guest has no IPv6 address to hand out.
	NoAddress
	// NoServerID: the Server has no DUID (an agent bug, not a guest's).
	NoServerID
	// Malformed: the library cannot decode the message.
	Malformed
	// Relayed: a Relay-forward from a directly attached guest.
	Relayed
	// UnsupportedType: a message a server never receives from a client
	// (Advertise, Reply, Reconfigure, leasequery, ...).
	UnsupportedType
	// Invalid: decodes, but breaks the RFC 8415 section 16 rules (no client
	// ID, a server ID where none may be, IAs in an Information-request, a
	// Confirm without addresses): the RFC says discard.
	Invalid
	// NotForUs: the message names another server's DUID.
	NotForUs
	// ForeignAddress: the client named an address that is not the guest's;
	// a reply was sent (see the package comment).
	ForeignAddress
	// NoIANA: the client asked for no IA_NA (only IA_PD, say); a reply with
	// NoAddrsAvail or NoBinding was sent.
	NoIANA
	// Declined: the guest's DAD found its address in use (a Decline); the
	// reply was sent, the address stays the guest's since IPAM decides.
	Declined
	numRefusals
)

var refusalNames = [numRefusals]string{
	None:            "none",
	Oversized:       "oversized",
	NoAddress:       "no-address",
	NoServerID:      "no-server-id",
	Malformed:       "malformed",
	Relayed:         "relayed",
	UnsupportedType: "unsupported-type",
	Invalid:         "invalid",
	NotForUs:        "not-for-us",
	ForeignAddress:  "foreign-address",
	NoIANA:          "no-ia-na",
	Declined:        "declined",
}

func (r Refusal) String() string {
	if r >= numRefusals {
		return "unknown"
	}
	return refusalNames[r]
}

// Reasons lists every Refusal but None, for registering metrics up front.
func Reasons() []Refusal {
	rs := make([]Refusal, 0, numRefusals-1)
	for r := None + 1; r < numRefusals; r++ {
		rs = append(rs, r)
	}
	return rs
}

// kinds are the message types a client sends, plus the relay wrapper a
// guest must not send; anything else is KindOther, so the label set of a
// "requests by type" counter stays bounded whatever a guest sends.
var kinds = []dhcpv6.MessageType{
	dhcpv6.MessageTypeSolicit,
	dhcpv6.MessageTypeRequest,
	dhcpv6.MessageTypeConfirm,
	dhcpv6.MessageTypeRenew,
	dhcpv6.MessageTypeRebind,
	dhcpv6.MessageTypeRelease,
	dhcpv6.MessageTypeDecline,
	dhcpv6.MessageTypeInformationRequest,
	dhcpv6.MessageTypeRelayForward,
}

// KindOther is the Kind of an empty payload or of any other message type.
const KindOther = "other"

// Kind names the message type of a client payload without decoding the
// rest of it: "solicit", "request", ..., "relay-forw" or KindOther.
func Kind(payload []byte) string {
	if len(payload) == 0 {
		return KindOther
	}
	for _, k := range kinds {
		if dhcpv6.MessageType(payload[0]) == k {
			return strings.ToLower(k.String())
		}
	}
	return KindOther
}

// Kinds lists every value Kind returns, for registering metrics up front.
func Kinds() []string {
	ks := make([]string, 0, len(kinds)+1)
	for _, k := range kinds {
		ks = append(ks, strings.ToLower(k.String()))
	}
	return append(ks, KindOther)
}
