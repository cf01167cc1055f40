package spoof

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"
	mnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

func mustMAC(t testing.TB, s string) net.HardwareAddr {
	mac, err := net.ParseMAC(s)
	if err != nil {
		t.Fatalf("parse MAC %s: %v", s, err)
	}
	return mac
}

func parseIPs(ss ...string) []netip.Addr {
	ips := make([]netip.Addr, len(ss))
	for i, s := range ss {
		ips[i] = netip.MustParseAddr(s)
	}
	return ips
}

// wantErrNaming returns an error unless err is non-nil and mentions all words.
func wantErrNaming(err error, words ...string) error {
	if err == nil {
		return fmt.Errorf("got nil error, want one naming %q", words)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			return fmt.Errorf("error %q does not name %q", err, w)
		}
	}
	return nil
}

type step struct {
	name string
	fn   func() error
}

// runSteps runs dependent steps in order inside the namespace of h.
func runSteps(t *testing.T, in func(func() error) error, steps []step) {
	t.Helper()
	for _, s := range steps {
		if err := in(s.fn); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
}

// addDevices creates a veth pair per name, the named end standing for a
// port's host end: the chains hook on real devices.
func addDevices(names ...string) error {
	for _, name := range names {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "x" + name[2:]}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth %s: %w", name, err)
		}
	}
	return nil
}

func TestLifecycle(t *testing.T) {
	harness.RequireRoot(t)
	h := newNS(t, randHex(t, 4), "host")
	p := Port{Name: "tb1a2b3c4d5e6f7", MAC: mustMAC(t, "52:54:00:12:34:56"),
		IPs: parseIPs("192.0.2.10", "2001:db8::10")}
	q := Port{Name: "tb0000000000002", MAC: mustMAC(t, "52:54:00:00:00:02"),
		IPs: parseIPs("192.0.2.20")}
	moved := p
	moved.IPs = parseIPs("192.0.2.11")
	ghost := Port{Name: "tbghost", MAC: p.MAC}

	runSteps(t, doIn(h), []step{
		{"devices", func() error { return addDevices(p.Name, q.Name) }},
		{"ensure", func() error { return Ensure(p) }},
		{"verify", func() error { return Verify(p) }},
		{"ensure again", func() error { return Ensure(p) }},
		{"verify after second ensure (no duplicates)", func() error { return Verify(p) }},
		{"ensure with other IPs", func() error { return Ensure(moved) }},
		{"verify replaced rules", func() error { return Verify(moved) }},
		{"verify old IPs fails", func() error { return wantErrNaming(Verify(p), p.Name, "rule") }},
		{"ensure original IPs", func() error { return Ensure(p) }},
		{"ensure second port", func() error { return Ensure(q) }},
		{"verify first port", func() error { return Verify(p) }},
		{"verify second port", func() error { return Verify(q) }},
		{"delete first port", func() error { return Delete(p.Name) }},
		{"delete first port again", func() error { return Delete(p.Name) }},
		{"verify deleted port fails", func() error { return wantErrNaming(Verify(p), p.Name, "table") }},
		{"second port intact", func() error { return Verify(q) }},
		{"delete second port", func() error { return Delete(q.Name) }},
		{"delete a port that never had rules", func() error { return Delete(ghost.Name) }},
		{"ruleset empty", wantNoTables},
	})
}

// TestRepairAndDrift tampers with the installed objects the way an operator
// or a crash of another tool might, and checks Verify notices and
// Ensure/Delete cope.
func TestRepairAndDrift(t *testing.T) {
	harness.RequireRoot(t)
	h := newNS(t, randHex(t, 4), "host")
	p := Port{Name: "tbdrift", MAC: mustMAC(t, "52:54:00:aa:bb:cc"),
		IPs: parseIPs("198.51.100.7", "2001:db8:1::7")}
	tbl := tableOf(p.Name)
	chain := chainOf(tbl, p.Name)
	accept := nftables.ChainPolicyAccept
	lax := *chain
	lax.Policy = &accept
	elsewhere := *chain
	elsewhere.Device = "tbother"

	runSteps(t, doIn(h), []step{
		{"devices", func() error { return addDevices(p.Name, elsewhere.Device) }},
		{"ensure", func() error { return Ensure(p) }},
		{"drop last rule", func() error { return deleteLastRule(tbl, chain) }},
		{"verify notices missing rule", func() error { return wantErrNaming(Verify(p), p.Name, "rules") }},
		{"flush chain", func() error { return flushChain(chain) }},
		{"verify notices empty chain", func() error { return wantErrNaming(Verify(p), chainName, "0 rules") }},
		{"ensure repairs", func() error { return Ensure(p) }},
		{"verify repaired", func() error { return Verify(p) }},
		{"policy accept", func() error { return addChain(&lax) }},
		{"verify notices policy", func() error { return wantErrNaming(Verify(p), chainName, "policy") }},
		{"ensure restores policy", func() error { return Ensure(p) }},
		{"verify restored", func() error { return Verify(p) }},
		{"delete the chain only", func() error { return delChain(chain) }},
		{"verify notices missing chain", func() error { return wantErrNaming(Verify(p), chainName, "missing") }},
		{"ensure recreates it", func() error { return Ensure(p) }},
		{"verify recreated", func() error { return Verify(p) }},
		{"make the table dormant", func() error { return makeDormant(tbl.Name) }},
		{"verify notices dormant", func() error { return wantErrNaming(Verify(p), tbl.Name, "dormant") }},
		{"ensure wakes it", func() error { return Ensure(p) }},
		{"verify awake", func() error { return Verify(p) }},
		{"delete", func() error { return Delete(p.Name) }},
		{"chain on another device", func() error { return addChain(&elsewhere) }},
		{"verify notices device", func() error { return wantErrNaming(Verify(p), "device", elsewhere.Device) }},
		{"delete copes with foreign content", func() error { return Delete(p.Name) }},
		{"verify notices table gone", func() error { return wantErrNaming(Verify(p), "table", p.Name) }},
		{"ruleset empty", wantNoTables},
	})
}

func TestValidation(t *testing.T) {
	// Invalid ports must fail before any netlink call; the namespace only
	// keeps a validation bug from writing to the machine's own ruleset.
	harness.RequireRoot(t)
	h := newNS(t, randHex(t, 4), "host")
	good := Port{Name: "tbok", MAC: mustMAC(t, "52:54:00:00:00:01")}
	bad := map[string]Port{
		"empty name":     {MAC: good.MAC},
		"long name":      {Name: "tb0123456789abcdef", MAC: good.MAC},
		"slash in name":  {Name: "tb/x", MAC: good.MAC},
		"multicast MAC":  {Name: "tbx", MAC: mustMAC(t, "01:00:5e:00:00:01")},
		"zero MAC":       {Name: "tbx", MAC: mustMAC(t, "00:00:00:00:00:00")},
		"short MAC":      {Name: "tbx", MAC: net.HardwareAddr{1, 2}},
		"unspecified IP": {Name: "tbx", MAC: good.MAC, IPs: parseIPs("0.0.0.0")},
		"invalid IP":     {Name: "tbx", MAC: good.MAC, IPs: []netip.Addr{{}}},
	}
	in(t, h, func() error {
		if err := addDevices(good.Name, "tbx"); err != nil {
			return err
		}
		for name, p := range bad {
			if err := Ensure(p); err == nil {
				return fmt.Errorf("%s: Ensure accepted %+v", name, p)
			}
		}
		return wantNoTables()
	})
}

func wantNoTables() error {
	tables, err := listTables()
	if err != nil {
		return err
	}
	if len(tables) != 0 {
		return fmt.Errorf("ruleset has %d tables, want none (first: %s)", len(tables), tables[0].Name)
	}
	return nil
}

func deleteLastRule(t *nftables.Table, chain *nftables.Chain) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	rules, err := c.GetRules(t, chain)
	if err != nil || len(rules) == 0 {
		return fmt.Errorf("get rules of %s: %d rules, %v", chain.Name, len(rules), err)
	}
	if err := c.DelRule(rules[len(rules)-1]); err != nil {
		return err
	}
	return c.Flush()
}

func flushChain(chain *nftables.Chain) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.FlushChain(chain)
	return c.Flush()
}

func delChain(chain *nftables.Chain) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.DelChain(chain)
	return c.Flush()
}

// makeDormant sets a netdev table's dormant flag: its chains stay, their
// hooks go, so the rules see no frame. google/nftables cannot set table
// flags and nft(8) is not installed, so the batch is built here with
// mdlayher/netlink.
func makeDormant(table string) error {
	ae := mnl.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.String(unix.NFTA_TABLE_NAME, table)
	ae.Uint32(unix.NFTA_TABLE_FLAGS, unix.NFT_TABLE_F_DORMANT)
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	delimiter := func(typ mnl.HeaderType) mnl.Message {
		return mnl.Message{Header: mnl.Header{Type: typ, Flags: mnl.Request},
			Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES}}
	}
	newTable := mnl.Message{
		Header: mnl.Header{Type: mnl.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE),
			Flags: mnl.Request | mnl.Acknowledge},
		Data: append([]byte{unix.NFPROTO_NETDEV, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
	conn, err := mnl.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.SendMessages([]mnl.Message{delimiter(unix.NFNL_MSG_BATCH_BEGIN), newTable,
		delimiter(unix.NFNL_MSG_BATCH_END)}); err != nil {
		return err
	}
	_, err = conn.Receive() // the acknowledgement, or the error
	return err
}

// addChain creates or updates a chain (and its table) as another tool would.
func addChain(chain *nftables.Chain) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.AddTable(chain.Table)
	c.AddChain(chain)
	return c.Flush()
}

// TestConcurrentEnsure runs Ensure for several ports at once, with no lock
// between them: their tables share nothing, so each ends up whole.
func TestConcurrentEnsure(t *testing.T) {
	harness.RequireRoot(t)
	h := newNS(t, randHex(t, 4), "host")
	ports := make([]Port, 8)
	for i := range ports {
		ports[i] = scalePort(i)
	}
	in(t, h, func() error {
		for _, p := range ports {
			if err := addDevices(p.Name); err != nil {
				return err
			}
		}
		return nil
	})
	errs := make(chan error, len(ports))
	for _, p := range ports {
		go func() { errs <- doIn(h)(func() error { return Ensure(p) }) }()
	}
	for range ports {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	in(t, h, func() error {
		for _, p := range ports {
			if err := Verify(p); err != nil {
				return err
			}
		}
		for _, p := range ports {
			if err := Delete(p.Name); err != nil {
				return err
			}
		}
		return wantNoTables()
	})
}
