package agent

import (
	"log/slog"
	"net"

	"github.com/tapbridge/tapbridge-cni/internal/dhcp4"
	"github.com/tapbridge/tapbridge-cni/internal/frame"
)

// service answers one protocol for one guest. A port has at most one per
// protocol (dhcp4, dhcp6, ra); IPv6 plugs in as two more.
type service interface {
	// handle answers one request, already checked to come from the
	// guest's MAC and to be of the service's protocol.
	handle(p frame.Packet) outcome
}

// starter is a service with frames to send when a port starts being
// served (an unsolicited router advertisement).
type starter interface {
	start() []reply
}

// outcome is what one request came to.
type outcome struct {
	request string  // message type, the requests_total label
	replies []reply // frames to send out of the port, to the guest
	refusal string  // "" when served as asked; else the refusals_total reason
}

type reply struct {
	kind  string // message type, the replies_total label
	frame []byte
}

// dhcp4Service frames the answers of a dhcp4.Handler: from the bridge's
// MAC (the node's side of the L2) and the server identifier, port 67 to
// 68.
type dhcp4Service struct {
	h   *dhcp4.Handler
	src net.HardwareAddr
	log *slog.Logger
}

func (s *dhcp4Service) handle(p frame.Packet) outcome {
	r := s.h.Handle(p.Payload)
	o := outcome{request: r.Request}
	if r.Refusal != dhcp4.None {
		o.refusal = r.Refusal.String()
	}
	if r.Request == "decline" {
		// The guest found its address in use on the L2: IPAM handed out
		// an address someone else holds. Nothing to answer; worth saying.
		s.log.Warn("guest declined its address", "protocol", protoDHCP4)
	}
	if r.Reply != nil {
		h := frame.Header{Src: s.src, Dst: r.Reply.Dst, IPSrc: s.h.ServerID(), IPDst: r.Reply.IPDst}
		o.replies = []reply{{kind: r.Reply.Type, frame: frame.UDP4(h, dhcp4.ServerPort, dhcp4.ClientPort, r.Reply.Payload)}}
	}
	return o
}
