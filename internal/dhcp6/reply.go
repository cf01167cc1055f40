package dhcp6

import (
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/insomniacslk/dhcp/rfc1035label"
)

// answer builds the reply to an admitted message; nil means none is due.
func (s Server) answer(g Guest, msg *dhcpv6.Message) (*dhcpv6.Message, Refusal) {
	switch msg.Type() {
	case dhcpv6.MessageTypeSolicit:
		return s.advertise(g, msg)
	case dhcpv6.MessageTypeRequest:
		return s.assign(g, msg, s.reply(msg), iana.StatusNoAddrsAvail, false)
	case dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind:
		return s.assign(g, msg, s.reply(msg), iana.StatusNoBinding, true)
	case dhcpv6.MessageTypeConfirm:
		return s.confirm(g, msg)
	case dhcpv6.MessageTypeRelease:
		return withStatus(s.reply(msg), iana.StatusSuccess), None
	case dhcpv6.MessageTypeDecline:
		return withStatus(s.reply(msg), iana.StatusSuccess), Declined
	case dhcpv6.MessageTypeInformationRequest:
		out := s.reply(msg)
		addConfig(out, g)
		return out, None
	}
	return nil, UnsupportedType
}

// reply starts a Reply: same transaction, our server ID, the client's ID
// echoed as it came (the library re-encodes every DUID type byte for byte).
func (s Server) reply(msg *dhcpv6.Message) *dhcpv6.Message {
	out := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeReply, TransactionID: msg.TransactionID}
	if id := msg.GetOneOption(dhcpv6.OptionClientID); id != nil {
		out.AddOption(id)
	}
	out.AddOption(dhcpv6.OptServerID(s.DUID))
	return out
}

// advertise answers a Solicit: an Advertise, or a committed Reply when the
// client asked for Rapid Commit.
func (s Server) advertise(g Guest, msg *dhcpv6.Message) (*dhcpv6.Message, Refusal) {
	out := s.reply(msg)
	rapid := msg.GetOneOption(dhcpv6.OptionRapidCommit) != nil
	if rapid {
		dhcpv6.WithRapidCommit(out)
	} else {
		out.MessageType = dhcpv6.MessageTypeAdvertise
	}
	out, r := s.assign(g, msg, out, iana.StatusNoAddrsAvail, false)
	if !rapid && r != NoIANA {
		out.AddOption(dhcpv6.OptPreference(255))
	}
	return out, r
}

// assign puts the guest's address into the client's binding IA_NA, answers
// every other IA with the status missing, and adds DNS. withdraw returns the
// client's other addresses with lifetimes 0 (Renew, Rebind).
func (s Server) assign(g Guest, msg *dhcpv6.Message, out *dhcpv6.Message, missing iana.StatusCode, withdraw bool) (*dhcpv6.Message, Refusal) {
	addr, _ := g.address()
	ias := msg.Options.IANA()
	if len(ias) == 0 && msg.Type() == dhcpv6.MessageTypeSolicit {
		// RFC 8415 18.3.9: nothing but the status and the two IDs.
		return withStatus(out, missing), NoIANA
	}
	r := None
	bound := binding(ias, addr)
	for i, ia := range ias {
		if i != bound {
			out.AddOption(&dhcpv6.OptIANA{IaId: ia.IaId, Options: dhcpv6.IdentityOptions{Options: status(missing)}})
			continue
		}
		ours, foreign := iaFor(g, ia, withdraw)
		if foreign {
			r = ForeignAddress
		}
		out.AddOption(ours)
	}
	for _, pd := range msg.Options.IAPD() {
		out.AddOption(&dhcpv6.OptIAPD{IaId: pd.IaId, Options: dhcpv6.PDOptions{Options: status(noPrefix(missing))}})
	}
	if len(ias) == 0 {
		withStatus(out, missing)
		r = NoIANA
	}
	addConfig(out, g)
	return out, r
}

// binding picks the IA_NA the guest's address lives in: the one the client
// already has it in, else the first.
func binding(ias []*dhcpv6.OptIANA, addr netip.Addr) int {
	for i, ia := range ias {
		for _, a := range ia.Options.Addresses() {
			if same(a.IPv6Addr, addr) {
				return i
			}
		}
	}
	return 0
}

// iaFor answers the binding IA: the guest's address with its lifetimes,
// plus, when withdraw, the client's other addresses at lifetime 0. foreign
// reports that the client named an address that is not the guest's.
func iaFor(g Guest, ia *dhcpv6.OptIANA, withdraw bool) (out *dhcpv6.OptIANA, foreign bool) {
	addr, _ := g.address()
	valid, t1, t2 := g.lifetimes()
	out = &dhcpv6.OptIANA{IaId: ia.IaId, T1: t1, T2: t2}
	out.Options.Add(&dhcpv6.OptIAAddress{
		IPv6Addr:          net.IP(addr.AsSlice()),
		PreferredLifetime: valid,
		ValidLifetime:     valid,
	})
	for _, a := range ia.Options.Addresses() {
		if same(a.IPv6Addr, addr) {
			continue
		}
		foreign = true
		if withdraw {
			out.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: a.IPv6Addr})
		}
	}
	return out, foreign
}

// confirm answers whether the client's addresses are still its own. A
// Confirm naming no address gets no reply (RFC 8415 18.3.3).
func (s Server) confirm(g Guest, msg *dhcpv6.Message) (*dhcpv6.Message, Refusal) {
	addr, _ := g.address()
	n, foreign := 0, false
	for _, ia := range msg.Options.IANA() {
		for _, a := range ia.Options.Addresses() {
			n++
			foreign = foreign || !same(a.IPv6Addr, addr)
		}
	}
	switch {
	case n == 0:
		return nil, Invalid
	case foreign:
		return withStatus(s.reply(msg), iana.StatusNotOnLink), ForeignAddress
	}
	return withStatus(s.reply(msg), iana.StatusSuccess), None
}

// addConfig adds the guest's DNS servers and search list when it has any.
func addConfig(out *dhcpv6.Message, g Guest) {
	if ns := g.nameservers(); len(ns) > 0 {
		out.AddOption(dhcpv6.OptDNS(ns...))
	}
	if names := g.searchList(); len(names) > 0 {
		out.AddOption(dhcpv6.OptDomainSearchList(&rfc1035label.Labels{Labels: names}))
	}
}

func withStatus(out *dhcpv6.Message, code iana.StatusCode) *dhcpv6.Message {
	out.AddOption(status(code)[0])
	return out
}

func status(code iana.StatusCode) dhcpv6.Options {
	return dhcpv6.Options{&dhcpv6.OptStatusCode{StatusCode: code, StatusMessage: code.String()}}
}

// noPrefix is the IA_PD counterpart of an IA_NA status.
func noPrefix(missing iana.StatusCode) iana.StatusCode {
	if missing == iana.StatusNoAddrsAvail {
		return iana.StatusNoPrefixAvail
	}
	return missing
}

// same compares a wire address with the guest's; a 4-byte or malformed one
// never matches.
func same(ip net.IP, addr netip.Addr) bool {
	a, ok := netip.AddrFromSlice(ip)
	return ok && a == addr
}
