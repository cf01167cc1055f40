package nft

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/tapbridge/tapbridge-cni/test/harness"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// withConn runs fn with a Conn on a locked thread in a fresh network
// namespace, removed when the test ends: nothing here touches the
// machine's own namespace.
func withConn(t *testing.T, fn func(c *Conn) error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create a network namespace and nftables tables")
	}
	n, err := harness.NewNetns(harness.RunID("tbn"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Delete(); err != nil {
			t.Error(err)
		}
	})
	err = n.Do(func() error {
		c, err := Dial()
		if err != nil {
			return err
		}
		defer c.Close()
		return fn(c)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// hookedChain creates a device (a veth: this kernel has no dummy links)
// and returns a base chain hooked on its ingress, not yet installed.
func hookedChain(dev string) (Chain, error) {
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: dev}, PeerName: dev + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		return Chain{}, fmt.Errorf("add veth %s: %w", dev, err)
	}
	return Chain{
		Table:  Table{Family: Netdev, Name: "tbtest-" + dev},
		Name:   "guest",
		Hook:   &Hook{Type: "filter", Num: unix.NF_NETDEV_INGRESS, Priority: FilterPriority, Device: dev},
		Policy: Drop,
	}, nil
}

func install(c *Conn, ch Chain, rules [][]Expr) error {
	var b Batch
	b.AddTable(ch.Table)
	b.AddChain(ch)
	b.FlushChain(ch)
	for _, r := range rules {
		b.AddRule(ch, r)
	}
	return c.Commit(&b)
}

var allExprs = func() []Expr {
	var out []Expr
	for _, c := range exprCases {
		out = append(out, c.ours)
	}
	return out
}()

// TestKernelRoundTrip installs a base chain with every expression type and
// reads it back, with this package and with google/nftables.
func TestKernelRoundTrip(t *testing.T) {
	withConn(t, func(c *Conn) error {
		ch, err := hookedChain("tbn0")
		if err != nil {
			return err
		}
		rules := [][]Expr{allExprs, {Counter{}, Drop}}
		if err := install(c, ch, rules); err != nil {
			return err
		}
		// Installing again (no exclusive flags) replaces the rules.
		if err := install(c, ch, rules); err != nil {
			return fmt.Errorf("reinstall: %w", err)
		}
		if _, err := c.GetTable(ch.Table); err != nil {
			return err
		}
		got, err := c.GetChain(ch.Table, ch.Name)
		if err != nil {
			return err
		}
		if got.Name != ch.Name || got.Hook == nil || *got.Hook != *ch.Hook || got.Policy != Drop {
			return fmt.Errorf("chain read back as %+v (hook %+v), want %+v (hook %+v)", got, got.Hook, ch, ch.Hook)
		}
		gotRules, err := c.GetRules(ch)
		if err != nil {
			return err
		}
		if !slices.EqualFunc(gotRules, rules, slices.Equal) {
			return fmt.Errorf("rules read back as %v, want %v", gotRules, rules)
		}
		return checkWithGoogleNftables(ch, len(rules))
	})
}

// checkWithGoogleNftables reads the chain with an independent decoder.
func checkWithGoogleNftables(ch Chain, nrules int) error {
	g, err := nftables.New()
	if err != nil {
		return err
	}
	gc, err := g.ListChain(&nftables.Table{Name: ch.Table.Name, Family: nftables.TableFamilyNetdev}, ch.Name)
	if err != nil {
		return err
	}
	if gc.Name != ch.Name || gc.Type != nftables.ChainTypeFilter || gc.Hooknum == nil ||
		*gc.Hooknum != *nftables.ChainHookIngress || gc.Policy == nil || *gc.Policy != nftables.ChainPolicyDrop {
		return fmt.Errorf("google/nftables sees chain %+v", gc)
	}
	grules, err := g.GetRules(gc.Table, gc)
	if err != nil {
		return err
	}
	if len(grules) != nrules {
		return fmt.Errorf("google/nftables sees %d rules, want %d", len(grules), nrules)
	}
	return nil
}

// A refused batch changes nothing, and its error names the message the
// kernel refused.
func TestCommitIsAtomic(t *testing.T) {
	withConn(t, func(c *Conn) error {
		tbl := Table{Family: Netdev, Name: "tbtest-atomic"}
		var b Batch
		b.AddTable(tbl)
		b.AddRule(Chain{Table: tbl, Name: "nosuchchain"}, []Expr{Accept})
		b.AddChain(Chain{Table: tbl, Name: "plain"}) // valid, and last: it is acknowledged
		err := c.Commit(&b)
		if !errors.Is(err, unix.ENOENT) || !contains(err.Error(), "add rule 1", "nosuchchain") {
			return fmt.Errorf("commit with a rule for a missing chain: %v, want ENOENT naming the rule", err)
		}
		if _, err := c.GetTable(tbl); !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("table of a refused batch: %v, want ENOENT", err)
		}
		// The socket still works after a refused batch.
		var ok Batch
		ok.AddTable(tbl)
		if err := c.Commit(&ok); err != nil {
			return err
		}
		_, err = c.GetTable(tbl)
		return err
	})
}

func TestMissingObjects(t *testing.T) {
	withConn(t, func(c *Conn) error {
		tbl := Table{Family: Netdev, Name: "tbtest-none"}
		if _, err := c.GetTable(tbl); !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("GetTable of a missing table: %v, want ENOENT", err)
		}
		if _, err := c.GetChain(tbl, "guest"); !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("GetChain in a missing table: %v, want ENOENT", err)
		}
		// A rule dump filters by table and chain: of a missing one, it is empty.
		if rules, err := c.GetRules(Chain{Table: tbl, Name: "guest"}); err != nil || len(rules) != 0 {
			return fmt.Errorf("GetRules in a missing table: %v (%v), want none", rules, err)
		}
		var b Batch
		b.DelTable(tbl)
		if err := c.Commit(&b); !errors.Is(err, unix.ENOENT) || !contains(err.Error(), "delete table") {
			return fmt.Errorf("deleting a missing table: %v, want ENOENT naming the deletion", err)
		}
		var regular Batch
		regular.AddTable(tbl)
		regular.AddChain(Chain{Table: tbl, Name: "plain"})
		if err := c.Commit(&regular); err != nil {
			return err
		}
		ch, err := c.GetChain(tbl, "plain")
		if err != nil || ch.Hook != nil {
			return fmt.Errorf("regular chain read back as %+v (%v), want no hook", ch, err)
		}
		return nil
	})
}

// A dormant table (hooks unregistered) is reported, and AddTable wakes it.
func TestDormantTable(t *testing.T) {
	withConn(t, func(c *Conn) error {
		tbl := Table{Family: Netdev, Name: "tbtest-dormant"}
		// google/nftables cannot make a dormant table; nft(8) is not installed.
		var dormant Batch
		dormant.add(unix.NFT_MSG_NEWTABLE, unix.NLM_F_CREATE, Netdev, "add dormant table", func(a *attrs) {
			encodeTable(a, tbl)
			a.u32(unix.NFTA_TABLE_FLAGS, unix.NFT_TABLE_F_DORMANT)
		})
		if err := c.Commit(&dormant); err != nil {
			return err
		}
		if info, err := c.GetTable(tbl); err != nil || !info.Dormant {
			return fmt.Errorf("dormant table read as %+v (%v)", info, err)
		}
		var b Batch
		b.AddTable(tbl)
		if err := c.Commit(&b); err != nil {
			return err
		}
		if info, err := c.GetTable(tbl); err != nil || info.Dormant {
			return fmt.Errorf("after AddTable: %+v (%v), want awake", info, err)
		}
		return nil
	})
}

// TestLargeDump reads a chain whose rules span many reply datagrams, then
// flushes it and deletes its table.
func TestLargeDump(t *testing.T) {
	withConn(t, func(c *Conn) error {
		ch, err := hookedChain("tbn1")
		if err != nil {
			return err
		}
		var rules [][]Expr
		for i := range 3000 {
			rules = append(rules, []Expr{Payload{Base: Network, Offset: 12, Len: 4},
				Cmp{Op: Eq, Data: string([]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})}, Counter{}, Accept})
		}
		// A batch must fit the socket's send buffer (about 200 KiB): append
		// the rules 500 at a time.
		if err := install(c, ch, nil); err != nil {
			return err
		}
		for chunk := range slices.Chunk(rules, 500) {
			var b Batch
			for _, r := range chunk {
				b.AddRule(ch, r)
			}
			if err := c.Commit(&b); err != nil {
				return err
			}
		}
		got, err := c.GetRules(ch)
		if err != nil {
			return err
		}
		if !slices.EqualFunc(got, rules, slices.Equal) {
			return fmt.Errorf("read %d rules back, want the %d installed", len(got), len(rules))
		}
		var flush Batch
		flush.FlushChain(ch)
		if err := c.Commit(&flush); err != nil {
			return err
		}
		if got, err := c.GetRules(ch); err != nil || len(got) != 0 {
			return fmt.Errorf("after flush: %d rules (%v)", len(got), err)
		}
		var del Batch
		del.DelTable(ch.Table)
		if err := c.Commit(&del); err != nil {
			return err
		}
		if _, err := c.GetTable(ch.Table); !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("after delete: %v, want ENOENT", err)
		}
		return nil
	})
}

func TestEmptyBatch(t *testing.T) {
	withConn(t, func(c *Conn) error {
		return c.Commit(&Batch{})
	})
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
