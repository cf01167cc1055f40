package spoof

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Verify checks that the port's chain and map element exist and match p, and
// that the table's base chain dispatches to them; the error names what is
// missing or different. It costs the same whatever the number of ports.
func Verify(p Port) error {
	if err := p.validate(); err != nil {
		return fmt.Errorf("verify anti-spoofing rules for port %s: %w", p.Name, err)
	}
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("verify anti-spoofing rules for port %s: open netlink: %w", p.Name, err)
	}
	defer func() { _ = c.CloseLasting() }()

	t := tableOf(p.Bridge)
	checks := []func() error{
		func() error { return verifySkeleton(c, t) },
		func() error { return verifyElement(t, p.Name) },
		func() error { return verifyPortChain(c, t, p) },
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return fmt.Errorf("verify anti-spoofing rules for port %s: %w", p.Name, err)
		}
	}
	return nil
}

// verifySkeletonNow checks a bridge's shared objects over its own socket.
func verifySkeletonNow(bridge string) error {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	defer func() { _ = c.CloseLasting() }()
	return verifySkeleton(c, tableOf(bridge))
}

// verifySkeleton checks the table and the base chain's hook and rule:
// without them the port chain would never see a frame.
func verifySkeleton(c *nftables.Conn, t *nftables.Table) error {
	if _, err := c.ListTableOfFamily(t.Name, t.Family); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("table bridge %s is missing", t.Name)
		}
		return fmt.Errorf("get table bridge %s: %w", t.Name, err)
	}
	got, err := c.ListChain(t, baseChainName)
	if err != nil {
		return fmt.Errorf("get base chain %s of table %s: %w", baseChainName, t.Name, err)
	}
	if err := sameHook(got, baseChainOf(t)); err != nil {
		return err
	}
	// The map's shape needs no check of its own: the kernel only accepts
	// this rule's lookup into a verdict map, and verifyElement's lookup only
	// succeeds with an IFNAMSIZ key and yields a verdict. (The library's set
	// decoding also mislabels verdict maps' key types.)
	return verifyRules(c, t, got, [][]expr.Any{dispatchExprs()})
}

func sameHook(got, want *nftables.Chain) error {
	switch {
	case got.Hooknum == nil || got.Priority == nil || got.Policy == nil:
		return fmt.Errorf("chain %s is not a base chain", want.Name)
	case got.Type != want.Type || *got.Hooknum != *want.Hooknum || *got.Priority != *want.Priority:
		return fmt.Errorf("base chain %s has type %s hook %d priority %d, want %s hook %d priority %d",
			want.Name, got.Type, *got.Hooknum, *got.Priority, want.Type, *want.Hooknum, *want.Priority)
	case *got.Policy != *want.Policy:
		return fmt.Errorf("base chain %s has policy %d, want accept", want.Name, *got.Policy)
	}
	return nil
}

func verifyElement(t *nftables.Table, name string) error {
	v, err := getVerdictElement(t, portMapName, ifnameKey(name))
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("map %s has no element for port %s", portMapName, name)
	}
	if err != nil {
		return fmt.Errorf("get map element %s: %w", name, err)
	}
	if v.Kind != expr.VerdictJump || v.Chain != name {
		return fmt.Errorf("map element %s is %s, want jump %s", name, describeVerdict(v), name)
	}
	return nil
}

func verifyPortChain(c *nftables.Conn, t *nftables.Table, p Port) error {
	chain, err := c.ListChain(t, p.Name)
	if err != nil {
		// The library flattens the errno here; with the element present a
		// failure can only mean the chain itself is missing or unreadable.
		return fmt.Errorf("chain %s is missing from table %s: %w", p.Name, t.Name, err)
	}
	return verifyRules(c, t, chain, portRules(p))
}

// verifyRules compares a chain's rules with the expected ones, ignoring
// counter values and transaction-local set IDs, which the kernel either
// changes or does not report.
func verifyRules(c *nftables.Conn, t *nftables.Table, chain *nftables.Chain, want [][]expr.Any) error {
	got, err := c.GetRules(t, chain)
	if err != nil {
		return fmt.Errorf("get rules of chain %s: %w", chain.Name, err)
	}
	if len(got) != len(want) {
		return fmt.Errorf("chain %s has %d rules, want %d", chain.Name, len(got), len(want))
	}
	for i := range want {
		if !sameExprs(got[i].Exprs, want[i]) {
			return fmt.Errorf("chain %s rule %d is [%s], want [%s]", chain.Name, i+1,
				describeExprs(got[i].Exprs), describeExprs(want[i]))
		}
	}
	return nil
}

// sameExprs compares expressions by their netlink encoding, which is what
// the kernel acts on and is independent of how the library decoded them.
func sameExprs(got, want []expr.Any) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range want {
		a, errA := expr.Marshal(unix.NFPROTO_BRIDGE, normalize(got[i]))
		b, errB := expr.Marshal(unix.NFPROTO_BRIDGE, normalize(want[i]))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			return false
		}
	}
	return true
}

func normalize(e expr.Any) expr.Any {
	switch v := e.(type) {
	case *expr.Counter:
		return &expr.Counter{}
	case *expr.Lookup:
		l := *v
		l.SetID = 0
		return &l
	}
	return e
}

// describeExprs renders expressions compactly for error messages.
func describeExprs(exprs []expr.Any) string {
	parts := make([]string, len(exprs))
	for i, e := range exprs {
		if v, ok := e.(*expr.Verdict); ok {
			parts[i] = describeVerdict(v)
			continue
		}
		parts[i] = strings.TrimPrefix(fmt.Sprintf("%T%+v", e, normalize(e)), "*expr.")
	}
	return strings.Join(parts, " ")
}

func describeVerdict(v *expr.Verdict) string {
	names := map[expr.VerdictKind]string{
		expr.VerdictAccept: "accept", expr.VerdictDrop: "drop",
		expr.VerdictJump: "jump", expr.VerdictGoto: "goto", expr.VerdictReturn: "return",
	}
	name, ok := names[v.Kind]
	if !ok {
		name = fmt.Sprintf("verdict(%d)", v.Kind)
	}
	return strings.TrimSpace(name + " " + v.Chain)
}
