package agent

import (
	"net"
	"net/netip"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/tapbridge/tapbridge-cni/internal/dhcp6"
	"github.com/tapbridge/tapbridge-cni/internal/frame"
	"github.com/tapbridge/tapbridge-cni/internal/ra"
)

// DHCPv6 ports (RFC 8415 7.2).
const (
	dhcp6ClientPort = 546
	dhcp6ServerPort = 547
)

// ndHopLimit is what neighbour discovery sends and requires (RFC 4861).
const ndHopLimit = 255

var (
	allNodes    = netip.MustParseAddr("ff02::1")
	allNodesMAC = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
)

// dhcp6Service frames the answers of a dhcp6.Server for one guest: from
// the bridge's MAC and the node's link-local address on it, to the
// client's own source address and port 546.
type dhcp6Service struct {
	srv   dhcp6.Server
	guest dhcp6.Guest
	src   net.HardwareAddr
	srcIP netip.Addr // link-local
}

func (s *dhcp6Service) handle(p frame.Packet) outcome {
	payload, r := s.srv.Handle(s.guest, p.Payload)
	o := outcome{request: dhcp6.Kind(p.Payload)}
	if r != dhcp6.None {
		o.refusal = r.String()
	}
	if payload != nil {
		h := frame.Header{Src: s.src, Dst: p.Src, IPSrc: s.srcIP, IPDst: p.IPSrc}
		kind := strings.ToLower(dhcpv6.MessageType(payload[0]).String())
		o.replies = []reply{{kind: kind, frame: frame.UDP6(h, 0, dhcp6ServerPort, dhcp6ClientPort, payload)}}
	}
	return o
}

// raService answers router solicitations with the port's advertisement,
// and sends it unasked when serving starts (starter) and every
// reannounceEvery after (see port).
type raService struct {
	frame []byte // the advertisement to all nodes, framed once
}

func newRAService(p ra.Params, srcIP netip.Addr) (*raService, error) {
	msg, err := ra.Advertisement(p)
	if err != nil {
		return nil, err
	}
	h := frame.Header{Src: p.SourceMAC, Dst: allNodesMAC, IPSrc: srcIP, IPDst: allNodes}
	return &raService{frame: frame.ICMPv6(h, ndHopLimit, msg)}, nil
}

// handle checks what RFC 4861 6.1.1 asks of a solicitation that needs the
// IPv6 header, then what ra checks of the message. The answer goes to all
// nodes, which out of this port is the guest alone.
func (s *raService) handle(p frame.Packet) outcome {
	o := outcome{request: "rs"}
	if p.HopLimit != ndHopLimit || !ra.ValidChecksum(p.IPSrc, p.IPDst, p.Payload) {
		o.refusal = ra.Malformed.String()
		return o
	}
	// From ::, a solicitation may carry no source link-layer option.
	if p.IPSrc.IsUnspecified() && (len(p.Payload) < 8 || !optionsFromUnspecified(p.Payload[8:])) {
		o.refusal = ra.Malformed.String()
		return o
	}
	if ok, r := ra.IsSolicitation(p.Payload); !ok {
		o.refusal = r.String()
		return o
	}
	o.replies = s.start()
	return o
}

func (s *raService) start() []reply { return []reply{{kind: "ra", frame: s.frame}} }

// linkLocal is the node's link-local address on the bridge: one the
// bridge has, else the one its MAC gives by modified EUI-64 (RFC 4291),
// which is what the kernel gives it when IPv6 is on.
func linkLocal(addrs []netip.Prefix, mac net.HardwareAddr) netip.Addr {
	for _, a := range addrs {
		if a.Addr().Is6() && a.Addr().IsLinkLocalUnicast() {
			return a.Addr().WithZone("")
		}
	}
	return eui64(mac)
}
