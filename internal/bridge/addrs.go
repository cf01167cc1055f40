package bridge

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Addr is one of the bridge's addresses, as the host-address code reads
// it.
type Addr struct {
	Prefix netip.Prefix // the address, with its prefix length
	Flags  uint32       // IFA_F_*, all 32 bits
	Scope  uint8        // RT_SCOPE_*
}

// Tentative reports whether IPv6 duplicate address detection is still
// running for the address.
func (a Addr) Tentative() bool { return a.Flags&unix.IFA_F_TENTATIVE != 0 }

// DADFailed reports whether IPv6 duplicate address detection found the
// address in use on the link.
func (a Addr) DADFailed() bool { return a.Flags&unix.IFA_F_DADFAILED != 0 }

// Addrs lists the bridge's addresses of one family (unix.AF_INET/AF_INET6).
//
// It asks the kernel for this bridge's addresses alone: a strictly checked
// dump with the bridge's index in the request. The library's AddrList
// dumps the whole netns and filters in user space, and the kernel then
// walks every device, so each ADD would cost more with every pod's host
// veth on the node.
func (b *Bridge) Addrs(family int) ([]Addr, error) {
	addrs, err := dumpAddrs(b.Index, family)
	for try := 1; errors.Is(err, nl.ErrDumpInterrupted) && try < 3; try++ {
		addrs, err = dumpAddrs(b.Index, family) // the addresses changed during the dump
	}
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", b.Name, err)
	}
	return addrs, nil
}

func dumpAddrs(index, family int) ([]Addr, error) {
	msgs, err := addrDump(index, family)
	if err != nil {
		return nil, err
	}
	var out []Addr
	for _, m := range msgs {
		a, ok, err := parseAddr(m, index, family)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, a)
		}
	}
	return out, nil
}

// addrDump is the raw RTM_NEWADDR messages of a dump for one device. A
// kernel without strict checking (before 4.20) refuses the option and
// sends every device's, which parseAddr then skips.
func addrDump(index, family int) ([][]byte, error) {
	sock, err := nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer sock.Close()
	_ = unix.SetsockoptInt(sock.GetFd(), unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1)
	// The library sets its timeouts only on sockets it opens itself.
	if err := sock.SetSendTimeout(&nl.SocketTimeoutTv); err != nil {
		return nil, err
	}
	if err := sock.SetReceiveTimeout(&nl.SocketTimeoutTv); err != nil {
		return nil, err
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETADDR, unix.NLM_F_DUMP)
	msg := nl.NewIfAddrmsg(family)
	msg.Index = uint32(index)
	req.AddData(msg)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: sock}}
	return req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWADDR)
}

// parseAddr reads one RTM_NEWADDR; ok is false for another device's or
// family's address.
func parseAddr(m []byte, index, family int) (a Addr, ok bool, err error) {
	ifa := nl.DeserializeIfAddrmsg(m)
	if int(ifa.Index) != index || int(ifa.Family) != family {
		return a, false, nil
	}
	attrs, err := nl.ParseRouteAttr(m[ifa.Len():])
	if err != nil {
		return a, false, fmt.Errorf("decode address: %w", err)
	}
	var local, address netip.Addr
	flags := uint32(ifa.Flags)
	for _, attr := range attrs {
		switch attr.Attr.Type {
		case unix.IFA_LOCAL:
			local, _ = netip.AddrFromSlice(attr.Value)
		case unix.IFA_ADDRESS:
			address, _ = netip.AddrFromSlice(attr.Value)
		case unix.IFA_FLAGS: // the full 32 bits; ifa_flags holds the low 8
			if len(attr.Value) == 4 {
				flags = nl.NativeEndian().Uint32(attr.Value)
			}
		}
	}
	ip := local // IPv4 sends both (equal on a bridge), IPv6 only IFA_ADDRESS
	if !ip.IsValid() {
		ip = address
	}
	if !ip.IsValid() {
		return a, false, fmt.Errorf("decode address: no IFA_LOCAL or IFA_ADDRESS")
	}
	p := netip.PrefixFrom(ip, int(ifa.Prefixlen))
	if !p.IsValid() {
		return a, false, fmt.Errorf("decode address: %s has prefix length %d", ip, ifa.Prefixlen)
	}
	return Addr{Prefix: p, Flags: flags, Scope: ifa.Scope}, true, nil
}
