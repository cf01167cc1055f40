package arp

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
)

const (
	bodyLen    = 28 // ARP body for Ethernet/IPv4
	htEthernet = 1
	opRequest  = 1
)

// probeFrame builds an RFC 5227 ARP probe for ip, sent from mac.
//
// The sender IP is 0.0.0.0 because we do not own ip yet: a probe must not
// make other hosts update their ARP caches to point ip at us, which is what a
// request with a real sender IP would do. The target MAC is zero, as RFC 5227
// section 2.1.1 asks.
func probeFrame(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, 0, ethMinFrame)
	b = appendEthernet(b, broadcastMAC, mac, etherTypeARP)
	b = binary.BigEndian.AppendUint16(b, htEthernet)
	b = binary.BigEndian.AppendUint16(b, etherTypeIPv4)
	b = append(b, macLen, net.IPv4len)
	b = binary.BigEndian.AppendUint16(b, opRequest)
	b = append(b, mac[:macLen]...)
	b = append(b, 0, 0, 0, 0)              // sender IP
	b = append(b, make([]byte, macLen)...) // target MAC
	target := ip.As4()
	b = append(b, target[:]...)
	return padFrame(b)
}

// packet holds the ARP fields that matter for conflict detection.
type packet struct {
	ethSrc   net.HardwareAddr
	senderHW net.HardwareAddr
	senderIP netip.Addr
	targetIP netip.Addr
}

// parse decodes an Ethernet frame carrying Ethernet/IPv4 ARP.
func parse(frame []byte) (packet, bool) {
	src, etherType, b, ok := parseEthernet(frame)
	if !ok || etherType != etherTypeARP || len(b) < bodyLen {
		return packet{}, false
	}
	if binary.BigEndian.Uint16(b[0:]) != htEthernet ||
		binary.BigEndian.Uint16(b[2:]) != etherTypeIPv4 ||
		b[4] != macLen || b[5] != net.IPv4len {
		return packet{}, false
	}
	return packet{
		ethSrc:   src,
		senderHW: net.HardwareAddr(b[8:14]),
		senderIP: netip.AddrFrom4([4]byte(b[14:18])),
		targetIP: netip.AddrFrom4([4]byte(b[24:28])),
	}, true
}

// conflict reports whether frame shows another host using or claiming ip
// (RFC 5227 section 2.1.1): any ARP packet whose sender IP is ip (a reply to
// our probe or an announcement), or another host's probe for ip.
// Frames from self are ignored so that our own probe, looped back by a
// bridge or a reflecting switch, is not mistaken for a competitor.
func conflict(frame []byte, self net.HardwareAddr, ip netip.Addr) bool {
	p, ok := parse(frame)
	if !ok || bytes.Equal(p.ethSrc, self) || bytes.Equal(p.senderHW, self) {
		return false
	}
	if p.senderIP == ip {
		return true
	}
	return p.senderIP.IsUnspecified() && p.targetIP == ip
}
