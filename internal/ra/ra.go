// Package ra builds the router advertisements a guest port gets and
// recognises the guest's router solicitations. It is pure: the agent owns
// the socket and the Ethernet/IPv6 framing, and sends the advertisement from
// the port's link-local address with hop limit 255 (RFC 4861 6.1.2).
// Encoding and decoding are done by github.com/mdlayher/ndp.
//
// The advertisement says M=1 and O=1 and puts the guest's prefix on-link
// with A=0. The port's anti-spoof rules accept only the IPAM address and the
// EUI-64 link-local address of the guest MAC as IPv6 sources, so an address
// the guest made by SLAAC would be dropped: A=0 keeps the guest from making
// one, and M=1 sends it to DHCPv6 (package dhcp6) for the IPAM address, O=1
// for DNS. L=1 lets the guest reach the rest of its subnet on-link, as the
// flat L2 requires, even when there is no router.
//
// The router lifetime is always 0: the node is not a router (tapbridge
// never forwards), and a guest routes off-link traffic through an RA's
// source address, the node's link-local, never through the gateway IPAM
// names. The guest's IPv6 default route comes from the L2's own router,
// whose periodic advertisements reach it through the bridge as on a
// classic host (only the guest's solicitations are kept off the L2).
//
// Bytes from Advertisement carry ICMPv6 checksum 0: the checksum covers the
// IPv6 pseudo-header, which only the framing knows. The framing fills it with
// Checksum (and checks a solicitation's with ValidChecksum) before sending.
package ra

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

const (
	// HopLimit is the Cur Hop Limit the guest is told to use.
	HopLimit = 64
	// MaxInterval is how often at most the agent repeats the unsolicited
	// advertisement (RFC 4861's default MaxRtrAdvInterval), well inside
	// PrefixLifetime.
	MaxInterval = 600 * time.Second
	// PrefixLifetime is the on-link prefix's valid lifetime: a day, so a
	// stopped agent does not take the subnet's on-link route away from a
	// guest before someone notices. Preferred = valid; with A=0 it has no
	// meaning to the guest.
	PrefixLifetime = 24 * time.Hour
	// MinMTU is IPv6's minimum link MTU; a smaller MTU option is ignored
	// by hosts (RFC 4861 6.3.4), so it is refused here instead.
	MinMTU = 1280
	// MaxMTU is the largest MTU a Linux veth or TAP can have.
	MaxMTU = 65535
)

// Params is what one guest port advertises.
type Params struct {
	Prefix    netip.Prefix     // the guest's IPv6 subnet from IPAM, on-link, A=0
	MTU       int              // MTU option when > 0; MinMTU..MaxMTU
	SourceMAC net.HardwareAddr // the port's MAC, for the source link-layer address option
}

// Advertisement is the ICMPv6 router advertisement for p, checksum 0.
func Advertisement(p Params) ([]byte, error) {
	m, err := advertisement(p)
	if err != nil {
		return nil, err
	}
	b, err := ndp.MarshalMessage(m)
	if err != nil {
		return nil, fmt.Errorf("encode router advertisement for %s: %w", p.Prefix, err)
	}
	return b, nil
}

func advertisement(p Params) (*ndp.RouterAdvertisement, error) {
	if !p.Prefix.IsValid() || !p.Prefix.Addr().Is6() || p.Prefix.Addr().Is4In6() {
		return nil, fmt.Errorf("router advertisement: prefix %q is not an IPv6 prefix", p.Prefix)
	}
	if len(p.SourceMAC) != 6 {
		return nil, fmt.Errorf("router advertisement: source MAC %q is not a 6-byte Ethernet address", p.SourceMAC)
	}
	if p.MTU < 0 || p.MTU > 0 && (p.MTU < MinMTU || p.MTU > MaxMTU) {
		return nil, fmt.Errorf("router advertisement: MTU %d outside %d..%d", p.MTU, MinMTU, MaxMTU)
	}
	prefix := p.Prefix.Masked()
	opts := []ndp.Option{
		&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: append(net.HardwareAddr(nil), p.SourceMAC...)},
		&ndp.PrefixInformation{
			PrefixLength:                   uint8(prefix.Bits()),
			OnLink:                         true,
			AutonomousAddressConfiguration: false,
			ValidLifetime:                  PrefixLifetime,
			PreferredLifetime:              PrefixLifetime,
			Prefix:                         prefix.Addr(),
		},
	}
	if p.MTU > 0 {
		opts = append(opts, ndp.NewMTU(uint32(p.MTU)))
	}
	return &ndp.RouterAdvertisement{
		CurrentHopLimit:      HopLimit,
		ManagedConfiguration: true,
		OtherConfiguration:   true,
		RouterLifetime:       0, // see the package comment
		Options:              opts,
	}, nil
}

// Checksum is the ICMPv6 checksum of icmp sent from src to dst, computed as
// if icmp's own checksum field were 0; the framing stores it at icmp[2:4].
// icmp must be at least the 4-byte ICMPv6 header; for less it returns 0.
func Checksum(src, dst netip.Addr, icmpMsg []byte) uint16 {
	if len(icmpMsg) < 4 {
		return 0
	}
	m := icmp.Message{
		Type: ipv6.ICMPType(icmpMsg[0]),
		Code: int(icmpMsg[1]),
		Body: &icmp.RawBody{Data: icmpMsg[4:]},
	}
	s, d := src.As16(), dst.As16()
	b, err := m.Marshal(icmp.IPv6PseudoHeader(s[:], d[:]))
	if err != nil || len(b) < 4 {
		return 0
	}
	return binary.BigEndian.Uint16(b[2:4])
}

// ValidChecksum reports whether the checksum icmp carries is right for a
// message from src to dst: the framing drops a solicitation that fails it
// (RFC 4861 6.1.1), since AF_PACKET sockets see frames the kernel has not
// checked.
func ValidChecksum(src, dst netip.Addr, icmpMsg []byte) bool {
	return len(icmpMsg) >= 4 && Checksum(src, dst, icmpMsg) == binary.BigEndian.Uint16(icmpMsg[2:4])
}
