package arp

import (
	"encoding/binary"
	"net"
)

const (
	ethHeaderLen = 14
	// ethMinFrame is the shortest Ethernet frame without FCS (ETH_ZLEN).
	// Not every driver pads short frames handed to a packet socket, and some
	// receivers drop runts, so frames are padded here.
	ethMinFrame = 60

	etherTypeARP  = 0x0806
	etherTypeIPv4 = 0x0800

	macLen = 6
)

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// appendEthernet appends an Ethernet II header to b.
func appendEthernet(b []byte, dst, src net.HardwareAddr, etherType uint16) []byte {
	b = append(b, dst[:macLen]...)
	b = append(b, src[:macLen]...)
	return binary.BigEndian.AppendUint16(b, etherType)
}

// parseEthernet splits a frame into its source MAC, EtherType and payload.
func parseEthernet(frame []byte) (src net.HardwareAddr, etherType uint16, payload []byte, ok bool) {
	if len(frame) < ethHeaderLen {
		return nil, 0, nil, false
	}
	src = net.HardwareAddr(frame[macLen : 2*macLen])
	etherType = binary.BigEndian.Uint16(frame[2*macLen:])
	return src, etherType, frame[ethHeaderLen:], true
}

// padFrame extends b with zeros up to the Ethernet minimum frame size.
func padFrame(b []byte) []byte {
	for len(b) < ethMinFrame {
		b = append(b, 0)
	}
	return b
}
