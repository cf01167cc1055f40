package spoof

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tapbridge/tapbridge-cni/pkg/nft"
	"golang.org/x/sys/unix"
)

// Verify checks that the port's table and base chain exist, that the chain
// is hooked on the port's ingress, and that its rules match p; the error
// names what is missing or different. It reads only the port's own objects.
func Verify(p Port) error {
	if err := p.validate(); err != nil {
		return fmt.Errorf("verify anti-spoofing rules for port %s: %w", p.Name, err)
	}
	c, err := nft.Dial()
	if err != nil {
		return fmt.Errorf("verify anti-spoofing rules for port %s: %w", p.Name, err)
	}
	defer c.Close()

	want := chainOf(p.Name)
	checks := []func() error{
		func() error { return verifyTable(c, want.Table) },
		func() error { return verifyHook(c, want) },
		func() error { return verifyRules(c, want, portRules(p)) },
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return fmt.Errorf("verify anti-spoofing rules for port %s: %w", p.Name, err)
		}
	}
	return nil
}

func verifyTable(c *nft.Conn, t nft.Table) error {
	info, err := c.GetTable(t)
	switch {
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("table netdev %s is missing", t.Name)
	case err != nil:
		return err
	case info.Dormant:
		// Its chain is intact but unhooked: the guest's frames pass unchecked.
		return fmt.Errorf("table netdev %s is dormant", t.Name)
	}
	return nil
}

// verifyHook checks the base chain's type, hook, priority, policy and
// device: hooked anywhere else, its rules would never see the guest's
// frames.
func verifyHook(c *nft.Conn, want nft.Chain) error {
	got, err := c.GetChain(want.Table, want.Name)
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("chain %s is missing from table %s", want.Name, want.Table.Name)
	}
	if err != nil {
		return err
	}
	g, w := got.Hook, want.Hook
	switch {
	case g == nil:
		return fmt.Errorf("chain %s is not a base chain", want.Name)
	case g.Type != w.Type || g.Num != w.Num || g.Priority != w.Priority:
		return fmt.Errorf("base chain %s has type %s hook %d priority %d, want %s hook %d priority %d",
			want.Name, g.Type, g.Num, g.Priority, w.Type, w.Num, w.Priority)
	case got.Policy != want.Policy:
		return fmt.Errorf("base chain %s has policy %s, want %s", want.Name, got.Policy, want.Policy)
	case g.Device != w.Device:
		return fmt.Errorf("base chain %s is hooked on device %q, want %s", want.Name, g.Device, w.Device)
	}
	return nil
}

// verifyRules compares a chain's rules with the expected ones. Counters
// compare equal whatever they counted.
func verifyRules(c *nft.Conn, chain nft.Chain, want [][]nft.Expr) error {
	got, err := c.GetRules(chain)
	if err != nil {
		return err
	}
	if len(got) != len(want) {
		return fmt.Errorf("chain %s has %d rules, want %d", chain.Name, len(got), len(want))
	}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			return fmt.Errorf("chain %s rule %d is [%s], want [%s]", chain.Name, i+1,
				describeExprs(got[i]), describeExprs(want[i]))
		}
	}
	return nil
}

// describeExprs renders a rule compactly for error messages.
func describeExprs(exprs []nft.Expr) string {
	parts := make([]string, len(exprs))
	for i, e := range exprs {
		parts[i] = e.String()
	}
	return strings.Join(parts, " ")
}
