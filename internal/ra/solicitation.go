package ra

import (
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// Refusal says why an ICMPv6 message from a guest is not a router
// solicitation to answer. The agent counts them by String.
type Refusal uint8

const (
	// None: a router solicitation, to be answered.
	None Refusal = iota
	// Malformed: an RS that ndp cannot decode, or with a non-zero code
	// (RFC 4861 6.1.1 says discard both).
	Malformed
	// NotSolicitation: some other ICMPv6 message.
	NotSolicitation
	numRefusals
)

var refusalNames = [numRefusals]string{
	None:            "none",
	Malformed:       "malformed",
	NotSolicitation: "not-solicitation",
}

func (r Refusal) String() string {
	if r >= numRefusals {
		return "unknown"
	}
	return refusalNames[r]
}

// Reasons lists every Refusal but None, for registering metrics up front.
func Reasons() []Refusal {
	return []Refusal{Malformed, NotSolicitation}
}

// IsSolicitation reports whether icmp, an ICMPv6 message (header included)
// from the guest, is a router solicitation. The checks that need the IPv6
// header are the framing's: hop limit 255, the checksum (ValidChecksum),
// and no source link-layer option when the source is unspecified.
func IsSolicitation(icmp []byte) (bool, Refusal) {
	if len(icmp) < 4 {
		return false, Malformed
	}
	if ipv6.ICMPType(icmp[0]) != ipv6.ICMPTypeRouterSolicitation {
		return false, NotSolicitation
	}
	if icmp[1] != 0 {
		return false, Malformed
	}
	m, err := ndp.ParseMessage(icmp)
	if err != nil {
		return false, Malformed
	}
	if _, ok := m.(*ndp.RouterSolicitation); !ok {
		return false, Malformed
	}
	return true, None
}
