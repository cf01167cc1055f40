package spoof

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	mnl "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// scalePort is the i-th of many attachments.
func scalePort(i int) Port {
	return Port{
		Name: fmt.Sprintf("tb%013x", i),
		MAC:  net.HardwareAddr{0x52, 0x54, 0, byte(i >> 16), byte(i >> 8), byte(i)},
		IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
			netip.MustParseAddr(fmt.Sprintf("fd00::%x:%x", i>>16+1, i&0xffff))},
	}
}

// change is one object a committed transaction created, changed or
// deleted, as the kernel reports it: the message type (NFT_MSG_NEWRULE, ...)
// and the table the object belongs to.
type change struct {
	msg   uint16
	table string
}

func (c change) String() string { return fmt.Sprintf("%d@%s", c.msg, c.table) }

// changeLog reads the nftables events of the netns it was opened in: the
// kernel sends one message per object a transaction touched, then NEWGEN.
type changeLog struct{ conn *mnl.Conn }

func openChangeLog() (*changeLog, error) {
	conn, err := mnl.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	if err := conn.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		conn.Close()
		return nil, fmt.Errorf("join nftables events: %w", err)
	}
	return &changeLog{conn: conn}, nil
}

func (l *changeLog) close() { _ = l.conn.Close() }

// next returns what the next committed transaction changed. Callers run
// one transaction at a time, so a NEWGEN ends the batch they asked for.
func (l *changeLog) next() ([]change, error) {
	if err := l.conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return nil, err
	}
	var out []change
	for {
		msgs, err := l.conn.Receive()
		if err != nil {
			return nil, fmt.Errorf("read nftables events: %w", err)
		}
		for _, m := range msgs {
			typ := uint16(m.Header.Type) & 0xff
			if typ == unix.NFT_MSG_NEWGEN {
				return out, nil
			}
			out = append(out, change{msg: typ, table: tableAttr(m.Data)})
		}
	}
}

// tableAttr is the table an event's object belongs to: attribute 1 of
// every object kind (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE,
// ...), after the nfgenmsg.
func tableAttr(data []byte) string {
	if len(data) < 4 {
		return ""
	}
	ad, err := mnl.NewAttributeDecoder(data[4:])
	if err != nil {
		return ""
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		if ad.Type() == 1 {
			return ad.String()
		}
	}
	return ""
}

// portOps are the calls an ADD, a repeated ADD and a DEL make for a port.
func portOps(p Port) []step {
	return []step{
		{"Ensure(new)", func() error { return Ensure(p) }},
		{"Ensure(again)", func() error { return Ensure(p) }},
		{"Delete", func() error { return Delete(p.Name) }},
	}
}

// touched runs portOps on p and returns, per call, what the kernel says it
// changed.
func touched(p Port) (map[string][]change, error) {
	log, err := openChangeLog()
	if err != nil {
		return nil, err
	}
	defer log.close()
	out := map[string][]change{}
	for _, op := range portOps(p) {
		if err := op.fn(); err != nil {
			return nil, fmt.Errorf("%s: %w", op.name, err)
		}
		if out[op.name], err = log.next(); err != nil {
			return nil, fmt.Errorf("%s: %w", op.name, err)
		}
	}
	return out, nil
}

// ownOnly checks that every change is in p's own table and that Ensure
// reported at least its table, its chain and its rules.
func ownOnly(p Port, got map[string][]change) error {
	own := tableOf(p.Name).Name
	for name, changes := range got {
		for _, c := range changes {
			if c.table != own {
				return fmt.Errorf("%s changed %v, outside the port's table %s", name, c, own)
			}
		}
	}
	if n, want := len(got["Ensure(new)"]), 2+len(portRules(p)); n < want {
		return fmt.Errorf("Ensure(new) reported %d changes, want at least %d (table, chain, rules)", n, want)
	}
	return nil
}

// TestScaling checks the claim behind "per-call cost independent of how
// many attachments the node already has" where it can be checked without a
// clock: one port's Ensure and Delete change, by the kernel's own account,
// the same objects (all in the port's own table) with 1 or 500 other ports
// installed. How long the calls take with N attachments is the benchmark's
// Scale section.
func TestScaling(t *testing.T) {
	harness.RequireRoot(t)
	if testing.Short() {
		t.Skip("skipping: installs 500 ports")
	}
	h := newNS(t, randHex(t, 4), "host")
	port := scalePort(0xfffff)
	in(t, h, func() error {
		if err := addDevices(port.Name); err != nil {
			return err
		}
		installed := 0
		var first map[string][]change
		for _, n := range []int{1, 500} {
			for ; installed < n; installed++ {
				if err := addDevices(scalePort(installed).Name); err != nil {
					return err
				}
				if err := Ensure(scalePort(installed)); err != nil {
					return err
				}
			}
			got, err := touched(port)
			if err != nil {
				return fmt.Errorf("%d ports installed: %w", n, err)
			}
			if err := ownOnly(port, got); err != nil {
				return fmt.Errorf("%d ports installed: %w", n, err)
			}
			if first == nil {
				first = got
				continue
			}
			for _, op := range portOps(port) {
				if !slices.Equal(got[op.name], first[op.name]) {
					return fmt.Errorf("%s changed %d objects %v with %d ports installed, %d %v with 1",
						op.name, len(got[op.name]), got[op.name], n, len(first[op.name]), first[op.name])
				}
			}
		}
		return Verify(scalePort(250))
	})
}
