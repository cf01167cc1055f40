package spoof

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Verify checks that the port's table and base chain exist, that the chain
// is hooked on the port's ingress, and that its rules match p; the error
// names what is missing or different. It reads only the port's own objects.
func Verify(p Port) error {
	if err := p.validate(); err != nil {
		return fmt.Errorf("verify anti-spoofing rules for port %s: %w", p.Name, err)
	}
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("verify anti-spoofing rules for port %s: open netlink: %w", p.Name, err)
	}
	defer func() { _ = c.CloseLasting() }()

	t := tableOf(p.Name)
	want := chainOf(t, p.Name)
	checks := []func() error{
		func() error { return verifyTable(c, t) },
		func() error { return verifyLearnedSet(c, t, p.LearnLinkLocal) },
		func() error { return verifyHook(want) },
		func() error { return verifyRules(c, t, want, portRules(p)) },
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return fmt.Errorf("verify anti-spoofing rules for port %s: %w", p.Name, err)
		}
	}
	return nil
}

// verifyTable checks that the port's table exists and is not dormant: a
// dormant table keeps its chains but unhooks them, so no rule sees a frame.
// (Ensure's NEWTABLE carries flags 0 and so wakes it.)
func verifyTable(c *nftables.Conn, t *nftables.Table) error {
	got, err := c.ListTableOfFamily(t.Name, t.Family)
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("table netdev %s is missing", t.Name)
	}
	if err != nil {
		return fmt.Errorf("get table netdev %s: %w", t.Name, err)
	}
	if tableFlags(got)&unix.NFT_TABLE_F_DORMANT != 0 {
		return fmt.Errorf("table netdev %s is dormant: its chains are unhooked", t.Name)
	}
	return nil
}

// tableFlags is NFTA_TABLE_FLAGS of a table the library read. The kernel
// sends it big-endian and google/nftables v0.3.0 decodes it in host order,
// so the bytes are put back as they came and read big-endian.
// On a little-endian host TestRepairAndDrift's dormant case fails if the
// library ever changes this.
func tableFlags(t *nftables.Table) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], t.Flags)
	return binary.BigEndian.Uint32(b[:])
}

// verifyLearnedSet checks that a learning port's table has its set of
// learned link-locals, of the right type. What the set holds is the
// agent's business, not the configuration's: an element learned or not
// yet learned is never a difference. The rules that read it are checked
// with the others.
func verifyLearnedSet(c *nftables.Conn, t *nftables.Table, learn bool) error {
	if !learn {
		return nil
	}
	got, err := c.GetSetByName(t, learnedSet)
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("set %s is missing from table %s", learnedSet, t.Name)
	}
	if err != nil {
		return fmt.Errorf("get set %s of table %s: %w", learnedSet, t.Name, err)
	}
	if want := learnedOf(t); got.KeyType.Name != want.KeyType.Name || got.IsMap || got.Interval {
		return fmt.Errorf("set %s of table %s has type %s, want %s", learnedSet, t.Name, got.KeyType.Name, want.KeyType.Name)
	}
	return nil
}

// verifyHook checks the base chain's type, hook, priority, policy and
// device: hooked anywhere else, its rules would never see the guest's
// frames.
func verifyHook(want *nftables.Chain) error {
	got, err := getChain(want.Table, want.Name)
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("chain %s is missing from table %s", want.Name, want.Table.Name)
	}
	if err != nil {
		return fmt.Errorf("get chain %s of table %s: %w", want.Name, want.Table.Name, err)
	}
	switch {
	case !got.base:
		return fmt.Errorf("chain %s is not a base chain", want.Name)
	case got.typ != want.Type || got.hooknum != *want.Hooknum || got.priority != *want.Priority:
		return fmt.Errorf("base chain %s has type %s hook %d priority %d, want %s hook %d priority %d",
			want.Name, got.typ, got.hooknum, got.priority, want.Type, *want.Hooknum, *want.Priority)
	case got.policy != *want.Policy:
		return fmt.Errorf("base chain %s has policy %d, want drop", want.Name, got.policy)
	case got.device != want.Device:
		return fmt.Errorf("base chain %s is hooked on device %q, want %s", want.Name, got.device, want.Device)
	}
	return nil
}

// verifyRules compares a chain's rules with the expected ones, ignoring
// counter values, which the kernel changes.
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
		a, errA := expr.Marshal(unix.NFPROTO_NETDEV, normalize(got[i]))
		b, errB := expr.Marshal(unix.NFPROTO_NETDEV, normalize(want[i]))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			return false
		}
	}
	return true
}

// normalize drops what the kernel keeps for itself: counter values, and
// the batch-local ID a lookup named its set by (the kernel reports the
// name only).
func normalize(e expr.Any) expr.Any {
	switch e := e.(type) {
	case *expr.Counter:
		return &expr.Counter{}
	case *expr.Lookup:
		l := *e
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
