// Package dhcp6 answers one guest's DHCPv6 client messages with the IPv6
// address IPAM gave it, so a VM on a served attachment needs nothing in its
// guest configuration beyond "use DHCPv6".
//
// The package is pure: bytes of a client message in, bytes of the reply (or
// nothing) and a Refusal out. The agent owns the socket, the Ethernet/IPv6/UDP
// framing and the check that the frame came from the guest's own port with the
// guest's Ethernet source MAC. Encoding and decoding are done by
// github.com/insomniacslk/dhcp/dhcpv6; nothing here parses DHCPv6 by hand.
//
// The server keeps no bindings: the guest's address is a function of the
// attachment, so every Solicit, Request, Renew and Rebind gets the same answer
// and an agent restart loses nothing. Choices where RFC 8415 leaves room:
//
//   - Addresses. The first IA_NA that already holds the guest's address (else
//     the first IA_NA) gets it; any further IA_NA gets NoAddrsAvail (Solicit,
//     Request) or NoBinding (Renew, Rebind), since an address can be in one IA
//     only. An address hint that is not the guest's is ignored in Solicit and
//     Request (hints are optional for the server, RFC 8415 18.3.1/18.3.2) and,
//     in Renew and Rebind, returned with lifetimes 0 so the guest stops using
//     it (18.3.4/18.3.5): a guest re-created with a new IPAM address then drops
//     the old one, which the anti-spoof rules would drop anyway. Both count as
//     refusal "foreign-address" although a reply is sent. Confirm answers
//     NotOnLink unless every address is exactly the guest's: another address
//     in the same prefix would be dropped by the anti-spoof rules, so "on
//     link" is not enough.
//   - Lifetimes. Preferred = valid = Guest.Lifetime (DefaultLifetime when
//     unset), T1 = 1/2 and T2 = 4/5 of it: nothing on the server side expires,
//     so there is no reason to make an address deprecated before it is invalid.
//   - DNS (option 23) and domain search (24) are included whenever the guest
//     has them, requested in the ORO or not (RFC 8415 21.7 allows it), so that
//     minimal clients that send no ORO still learn them. Confirm, Release and
//     Decline replies carry only status, as in 18.3.3, 18.3.7 and 18.3.8.
//   - Advertise carries Preference 255, so the client requests at once instead
//     of waiting for other servers (18.2.1): nothing else may answer on a
//     served port. Rapid Commit is honoured: the Solicit gets a Reply.
//   - IA_PD is answered with NoPrefixAvail (NoBinding on Renew/Rebind); IA_TA
//     (deprecated by RFC 9915) is ignored. A Solicit with no IA_NA gets an
//     Advertise with nothing but NoAddrsAvail and the two IDs (18.3.9).
//   - Relay-forward messages are refused: a guest on its own port talks to the
//     server directly, and a relay wrapper would only let it speak for other
//     clients.
package dhcp6
