package dhcp4

// Refusal is why a request got no answer, or a NAK, for metrics and logs.
type Refusal uint8

const (
	None            Refusal = iota
	Malformed               // not a DHCP message the library can decode
	NotRequest              // a BOOTREPLY (op 2) from a guest
	Relayed                 // giaddr set: a guest's port has no relay behind it
	ForeignChaddr           // chaddr (or its hardware type/length) is not the guest's MAC
	ForeignClientID         // a client identifier of hardware type 1 that is not the guest's MAC
	NoAddress               // the guest has no IPv4 address to give
	ForeignAddress          // a requested address or ciaddr that is not the guest's (answered with NAK)
	NotForUs                // a REQUEST selecting another server's offer
	Invalid                 // a REQUEST that fits no client state of RFC 2131 4.3.2
	UnsupportedType         // BOOTP without a message type, or a type a client does not send
)

var refusalNames = [...]string{
	None:            "none",
	Malformed:       "malformed",
	NotRequest:      "not-request",
	Relayed:         "relayed",
	ForeignChaddr:   "foreign-chaddr",
	ForeignClientID: "foreign-client-id",
	NoAddress:       "no-address",
	ForeignAddress:  "foreign-address",
	NotForUs:        "not-for-us",
	Invalid:         "invalid",
	UnsupportedType: "unsupported-type",
}

func (r Refusal) String() string {
	if int(r) < len(refusalNames) {
		return refusalNames[r]
	}
	return "unknown"
}

// Refusals lists every refusal but None, for metrics to export at zero.
func Refusals() []Refusal {
	out := make([]Refusal, 0, len(refusalNames)-1)
	for r := Malformed; int(r) < len(refusalNames); r++ {
		out = append(out, r)
	}
	return out
}
