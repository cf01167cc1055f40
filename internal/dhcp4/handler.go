package dhcp4

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Ports of DHCPv4 (RFC 2131 4.1).
const (
	ServerPort = 67
	ClientPort = 68
)

// Handler answers one guest. It is immutable once made, so one handler
// may serve requests from any goroutine.
type Handler struct {
	guest Guest
	id    netip.Addr
	opts  []dhcpv4.Option // the configuration every OFFER and ACK carries
	lease []dhcpv4.Option // lease time, T1 and T2: not in an ACK to an INFORM
}

// NewHandler makes the handler of guest g with server identifier id (see
// ChooseServerID).
func NewHandler(g Guest, id netip.Addr) (*Handler, error) {
	if err := g.validate(); err != nil {
		return nil, fmt.Errorf("dhcp4 handler: %w", err)
	}
	if g.Addr.IsValid() && !id.Is4() {
		return nil, fmt.Errorf("dhcp4 handler: server identifier %s is not IPv4", id)
	}
	h := &Handler{guest: g, id: id}
	if g.Addr.IsValid() {
		h.opts = configOptions(g)
		h.lease = leaseOptions(g)
	}
	return h, nil
}

// ServerID is the handler's server identifier, the source of its replies.
func (h *Handler) ServerID() netip.Addr { return h.id }

// Result is what became of one request.
type Result struct {
	Request string  // the request's message type, lower case ("discover"); "unknown" when unreadable
	Reply   *Reply  // nil: no answer is due
	Refusal Refusal // None when the request was served as asked
}

// Reply is an answer and where it goes (RFC 2131 4.1, giaddr being zero).
type Reply struct {
	Type    string // "offer", "ack" or "nak"
	Payload []byte // the DHCP message, to send from port 67 to port 68
	IPDst   netip.Addr
	Dst     net.HardwareAddr
}

// Handle answers one DHCP message sent by the guest. It never panics on
// any input.
func (h *Handler) Handle(payload []byte) Result {
	req, err := dhcpv4.FromBytes(payload)
	if err != nil {
		return Result{Request: "unknown", Refusal: Malformed}
	}
	r := Result{Request: typeName(req.MessageType())}
	if r.Refusal = h.check(req); r.Refusal != None {
		return r
	}
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		r.Reply = h.reply(req, dhcpv4.MessageTypeOffer)
	case dhcpv4.MessageTypeRequest:
		r.Reply, r.Refusal = h.request(req)
	case dhcpv4.MessageTypeInform:
		r.Reply, r.Refusal = h.inform(req)
	case dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline:
		// No answer is due; the caller counts them (a decline says the
		// guest saw its address in use, which is worth a log line).
	default:
		r.Refusal = UnsupportedType
	}
	return r
}

// check refuses what no state of the guest can explain.
func (h *Handler) check(req *dhcpv4.DHCPv4) Refusal {
	switch {
	case req.OpCode != dhcpv4.OpcodeBootRequest:
		return NotRequest
	case req.HWType != iana.HWTypeEthernet || !bytes.Equal(req.ClientHWAddr, h.guest.MAC):
		return ForeignChaddr
	case !h.ownClientID(req):
		return ForeignClientID
	case !req.GatewayIPAddr.IsUnspecified() && req.GatewayIPAddr != nil:
		return Relayed
	case !h.guest.Addr.IsValid():
		return NoAddress
	}
	return None
}

// ownClientID accepts any client identifier but one that names an
// Ethernet address (type 1, RFC 2132 9.14) other than the guest's:
// others (a DUID, RFC 4361) cannot be tied to the MAC.
func (h *Handler) ownClientID(req *dhcpv4.DHCPv4) bool {
	id := req.Options.Get(dhcpv4.OptionClientIdentifier)
	if len(id) != 7 || id[0] != byte(iana.HWTypeEthernet) {
		return true
	}
	return bytes.Equal(id[1:], h.guest.MAC)
}

// request serves the four client states of RFC 2131 4.3.2.
func (h *Handler) request(req *dhcpv4.DHCPv4) (*Reply, Refusal) {
	sid := req.ServerIdentifier()
	requested := req.RequestedIPAddress()
	ciaddr := ip4(req.ClientIPAddr)
	switch {
	case sid != nil: // SELECTING
		if ip4(sid) != h.id {
			return nil, NotForUs
		}
		if requested == nil || ciaddr.IsValid() {
			return nil, Invalid
		}
		return h.ackIfOwn(req, ip4(requested))
	case requested != nil: // INIT-REBOOT
		if ciaddr.IsValid() {
			return nil, Invalid
		}
		return h.ackIfOwn(req, ip4(requested))
	case ciaddr.IsValid(): // RENEWING or REBINDING
		return h.ackIfOwn(req, ciaddr)
	}
	return nil, Invalid
}

func (h *Handler) ackIfOwn(req *dhcpv4.DHCPv4, addr netip.Addr) (*Reply, Refusal) {
	if addr != h.guest.Addr.Addr() {
		return h.nak(req), ForeignAddress
	}
	return h.reply(req, dhcpv4.MessageTypeAck), None
}

// inform answers with the configuration and no address or lease (RFC
// 2131 3.4); a guest asking from an address that is not its own gets
// nothing, as an INFORM is never NAKed.
func (h *Handler) inform(req *dhcpv4.DHCPv4) (*Reply, Refusal) {
	ciaddr := ip4(req.ClientIPAddr)
	switch {
	case !ciaddr.IsValid():
		return nil, Invalid
	case ciaddr != h.guest.Addr.Addr():
		return nil, ForeignAddress
	}
	m := h.base(req, dhcpv4.MessageTypeAck)
	m.ClientIPAddr = req.ClientIPAddr
	for _, o := range h.opts {
		m.UpdateOption(o)
	}
	return &Reply{Type: "ack", Payload: m.ToBytes(), IPDst: ciaddr, Dst: h.guest.MAC}, None
}

// reply is the OFFER or ACK of the guest's address.
func (h *Handler) reply(req *dhcpv4.DHCPv4, t dhcpv4.MessageType) *Reply {
	m := h.base(req, t)
	m.YourIPAddr = net.IP(h.guest.Addr.Addr().AsSlice())
	if t == dhcpv4.MessageTypeAck {
		m.ClientIPAddr = req.ClientIPAddr
	}
	for _, o := range h.opts {
		m.UpdateOption(o)
	}
	for _, o := range h.lease {
		m.UpdateOption(o)
	}
	return &Reply{Type: typeName(t), Payload: m.ToBytes(), IPDst: h.destination(req), Dst: h.guest.MAC}
}

// destination is RFC 2131 4.1 for giaddr zero: ciaddr if set, else
// broadcast if the client asked for it, else yiaddr. Every frame goes out
// of the guest's own port only, so broadcast reaches nobody else.
func (h *Handler) destination(req *dhcpv4.DHCPv4) netip.Addr {
	if c := ip4(req.ClientIPAddr); c.IsValid() {
		return c
	}
	if req.IsBroadcast() {
		return netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	return h.guest.Addr.Addr()
}

// nak is always broadcast (RFC 2131 4.1) and carries no configuration.
func (h *Handler) nak(req *dhcpv4.DHCPv4) *Reply {
	m := h.base(req, dhcpv4.MessageTypeNak)
	m.UpdateOption(dhcpv4.OptMessage("requested address is not this client's"))
	return &Reply{
		Type:    "nak",
		Payload: m.ToBytes(),
		IPDst:   netip.AddrFrom4([4]byte{255, 255, 255, 255}),
		Dst:     net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	}
}

// base is a reply to req of type t with the server identifier; the
// client identifier is echoed (RFC 6842).
func (h *Handler) base(req *dhcpv4.DHCPv4, t dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	m := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientHWAddr:  req.ClientHWAddr,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		Options:       dhcpv4.Options{},
	}
	m.UpdateOption(dhcpv4.OptMessageType(t))
	m.UpdateOption(dhcpv4.OptServerIdentifier(net.IP(h.id.AsSlice())))
	if id := req.Options.Get(dhcpv4.OptionClientIdentifier); id != nil {
		m.UpdateOption(dhcpv4.OptClientIdentifier(id))
	}
	return m
}

// ip4 is a DHCP header address as netip; the zero address and anything
// not IPv4 are invalid.
func ip4(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

// typeName is a message type as a metric label.
func typeName(t dhcpv4.MessageType) string {
	switch t {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeRequest,
		dhcpv4.MessageTypeDecline, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak,
		dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeInform:
		return strings.ToLower(t.String())
	case dhcpv4.MessageTypeNone:
		return "bootp"
	}
	return "other"
}
