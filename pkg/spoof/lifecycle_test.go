package spoof

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/google/nftables"
)

func mustMAC(t testing.TB, s string) net.HardwareAddr {
	mac, err := net.ParseMAC(s)
	if err != nil {
		t.Fatalf("parse MAC %s: %v", s, err)
	}
	return mac
}

func parseIPs(ss ...string) []net.IP {
	ips := make([]net.IP, len(ss))
	for i, s := range ss {
		ips[i] = net.ParseIP(s)
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

func TestLifecycle(t *testing.T) {
	requireRoot(t)
	h := newNS(t, randHex(t, 4), "host")
	p := Port{Bridge: "br0", Name: "tb1a2b3c4d5e6f7", MAC: mustMAC(t, "52:54:00:12:34:56"),
		IPs: parseIPs("192.0.2.10", "2001:db8::10")}
	q := Port{Bridge: "br0", Name: "tb0000000000002", MAC: mustMAC(t, "52:54:00:00:00:02"),
		IPs: parseIPs("192.0.2.20")}
	moved := p
	moved.IPs = parseIPs("192.0.2.11")

	runSteps(t, doIn(h), []step{
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
		{"delete first port", func() error { return Delete(p.Bridge, p.Name) }},
		{"delete first port again", func() error { return Delete(p.Bridge, p.Name) }},
		{"verify deleted port fails", func() error { return wantErrNaming(Verify(p), p.Name) }},
		{"second port intact", func() error { return Verify(q) }},
		{"delete second port", func() error { return Delete(q.Bridge, q.Name) }},
		{"delete table", func() error { return DeleteTable("br0") }},
		{"delete table again", func() error { return DeleteTable("br0") }},
		{"verify without table fails", func() error { return wantErrNaming(Verify(q), q.Name, "table") }},
		{"delete port without table", func() error { return Delete("br0", q.Name) }},
		{"ruleset empty", wantNoTables},
	})
}

// TestRepairAndDrift tampers with the installed objects the way an operator
// or a crash of another tool might, and checks Verify notices and
// Ensure/Delete cope.
func TestRepairAndDrift(t *testing.T) {
	requireRoot(t)
	h := newNS(t, randHex(t, 4), "host")
	p := Port{Bridge: "br1", Name: "tbdrift", MAC: mustMAC(t, "52:54:00:aa:bb:cc"),
		IPs: parseIPs("198.51.100.7", "2001:db8:1::7")}
	tbl := tableOf(p.Bridge)

	runSteps(t, doIn(h), []step{
		{"ensure", func() error { return Ensure(p) }},
		{"drop last port rule", func() error { return deleteLastRule(tbl, portChainOf(tbl, p.Name)) }},
		{"verify notices missing rule", func() error { return wantErrNaming(Verify(p), p.Name, "rules") }},
		{"flush base chain", func() error { return flushChain(baseChainOf(tbl)) }},
		{"verify notices dead dispatch", func() error { return wantErrNaming(Verify(p), baseChainName) }},
		{"ensure repairs", func() error { return Ensure(p) }},
		{"verify repaired", func() error { return Verify(p) }},
		{"remove map element only", func() error { return deleteElement(tbl, p.Name) }},
		{"verify notices missing element", func() error { return wantErrNaming(Verify(p), "element", p.Name) }},
		{"delete copes with missing element", func() error { return Delete(p.Bridge, p.Name) }},
		{"chain gone", func() error { return wantErrNaming(Verify(p), p.Name) }},
		{"delete table", func() error { return DeleteTable(p.Bridge) }},
		{"ruleset empty", wantNoTables},
	})
}

func TestValidation(t *testing.T) {
	// Invalid ports must fail before any netlink call; the namespace only
	// keeps a validation bug from writing to the machine's own ruleset.
	requireRoot(t)
	h := newNS(t, randHex(t, 4), "host")
	good := Port{Bridge: "br0", Name: "tbok", MAC: mustMAC(t, "52:54:00:00:00:01")}
	bad := map[string]Port{
		"reserved name":  {Bridge: "br0", Name: baseChainName, MAC: good.MAC},
		"long name":      {Bridge: "br0", Name: "tb0123456789abcdef", MAC: good.MAC},
		"slash in name":  {Bridge: "br0", Name: "tb/x", MAC: good.MAC},
		"empty bridge":   {Name: "tbx", MAC: good.MAC},
		"multicast MAC":  {Bridge: "br0", Name: "tbx", MAC: mustMAC(t, "01:00:5e:00:00:01")},
		"zero MAC":       {Bridge: "br0", Name: "tbx", MAC: mustMAC(t, "00:00:00:00:00:00")},
		"short MAC":      {Bridge: "br0", Name: "tbx", MAC: net.HardwareAddr{1, 2}},
		"unspecified IP": {Bridge: "br0", Name: "tbx", MAC: good.MAC, IPs: parseIPs("0.0.0.0")},
		"garbage IP":     {Bridge: "br0", Name: "tbx", MAC: good.MAC, IPs: []net.IP{{1, 2, 3}}},
	}
	in(t, h, func() error {
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

func deleteElement(t *nftables.Table, name string) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	if err := c.SetDeleteElements(portMapOf(t), []nftables.SetElement{{Key: ifnameKey(name)}}); err != nil {
		return err
	}
	return c.Flush()
}

// TestConcurrentEnsure runs Ensure for several ports of a new bridge at once,
// without the caller's per-bridge lock: creating the shared objects must be
// idempotent, and the base chain must end up with exactly one rule.
func TestConcurrentEnsure(t *testing.T) {
	requireRoot(t)
	h := newNS(t, randHex(t, 4), "host")
	ports := make([]Port, 8)
	for i := range ports {
		ports[i] = scalePort(i)
	}
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
			if err := Verify(p); err != nil { // also checks the base chain's single rule
				return err
			}
		}
		if err := DeleteTable("br0"); err != nil {
			return err
		}
		return wantNoTables()
	})
}
