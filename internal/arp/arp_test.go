package arp

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
)

var (
	selfMAC  = net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01}
	otherMAC = net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x02}
	zeroMAC  = net.HardwareAddr{0, 0, 0, 0, 0, 0}
	ip4      = netip.MustParseAddr("192.0.2.7")
	ip4Other = netip.MustParseAddr("192.0.2.8")
	ip4Zero  = netip.IPv4Unspecified()
)

func TestProbeFrameBytes(t *testing.T) {
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet dst: broadcast
		0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // Ethernet src: self
		0x08, 0x06, // EtherType ARP
		0x00, 0x01, // hardware type Ethernet
		0x08, 0x00, // protocol type IPv4
		0x06, 0x04, // address lengths
		0x00, 0x01, // request
		0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // sender MAC: self
		0, 0, 0, 0, // sender IP: 0.0.0.0
		0, 0, 0, 0, 0, 0, // target MAC: zero
		192, 0, 2, 7, // target IP
	}
	want = append(want, make([]byte, 60-len(want))...) // padding to ETH_ZLEN

	got := probeFrame(selfMAC, ip4)
	if !bytes.Equal(got, want) {
		t.Fatalf("probeFrame:\n got % x\nwant % x", got, want)
	}
}

// arpFrame builds an Ethernet/IPv4 ARP frame as another host would send it.
func arpFrame(ethSrc net.HardwareAddr, op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	b := appendEthernet(nil, broadcastMAC, ethSrc, etherTypeARP)
	b = append(b, 0, 1, 8, 0, 6, 4)
	b = binary.BigEndian.AppendUint16(b, op)
	b = append(b, sha...)
	b = append(b, spa.AsSlice()...)
	b = append(b, tha...)
	return append(b, tpa.AsSlice()...)
}

func TestParse(t *testing.T) {
	frame := padFrame(arpFrame(otherMAC, 2, otherMAC, ip4, selfMAC, ip4Zero))
	p, ok := parse(frame)
	if !ok {
		t.Fatal("parse rejected a valid reply")
	}
	if !bytes.Equal(p.ethSrc, otherMAC) || !bytes.Equal(p.senderHW, otherMAC) || p.senderIP != ip4 || p.targetIP != ip4Zero {
		t.Errorf("parse = %+v", p)
	}
}

func TestParseRejects(t *testing.T) {
	valid := arpFrame(otherMAC, 2, otherMAC, ip4, selfMAC, ip4Zero)
	mutate := func(f func(b []byte)) []byte {
		b := bytes.Clone(valid)
		f(b)
		return b
	}
	tests := map[string][]byte{
		"empty":          nil,
		"short ethernet": valid[:10],
		"truncated arp":  valid[:ethHeaderLen+bodyLen-1],
		"not arp":        mutate(func(b []byte) { b[12], b[13] = 0x08, 0x00 }),
		"not ethernet":   mutate(func(b []byte) { b[15] = 6 }),
		"not ipv4":       mutate(func(b []byte) { b[16] = 0x86 }),
		"bad lengths":    mutate(func(b []byte) { b[19] = 16 }),
	}
	for name, frame := range tests {
		if p, ok := parse(frame); ok {
			t.Errorf("%s: parse accepted %+v", name, p)
		}
	}
}

func TestConflict(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"reply from owner", arpFrame(otherMAC, 2, otherMAC, ip4, selfMAC, ip4Zero), true},
		{"announcement by owner", arpFrame(otherMAC, 1, otherMAC, ip4, zeroMAC, ip4), true},
		{"request from owner for a third address", arpFrame(otherMAC, 1, otherMAC, ip4, zeroMAC, ip4Other), true},
		{"another host probing the same address", arpFrame(otherMAC, 1, otherMAC, ip4Zero, zeroMAC, ip4), true},
		{"another host probing another address", arpFrame(otherMAC, 1, otherMAC, ip4Zero, zeroMAC, ip4Other), false},
		{"reply for another address", arpFrame(otherMAC, 2, otherMAC, ip4Other, selfMAC, ip4Zero), false},
		{"third party resolving the address", arpFrame(otherMAC, 1, otherMAC, ip4Other, zeroMAC, ip4), false},
		{"our own probe looped back", probeFrame(selfMAC, ip4), false},
		{"our sender MAC in another frame", arpFrame(otherMAC, 1, selfMAC, ip4, zeroMAC, ip4), false},
		{"our Ethernet source", arpFrame(selfMAC, 2, otherMAC, ip4, selfMAC, ip4Zero), false},
		{"garbage", []byte{1, 2, 3}, false},
	}
	for _, tt := range tests {
		if got := conflict(tt.frame, selfMAC, ip4); got != tt.want {
			t.Errorf("%s: conflict = %v, want %v", tt.name, got, tt.want)
		}
	}
}
