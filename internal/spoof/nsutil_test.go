package spoof

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("read random bytes: %v", err)
	}
	return hex.EncodeToString(b)
}

// newNS creates the named network namespace tbs-<tag>-<role> for the
// length of the test.
func newNS(t testing.TB, tag, role string) ns.NetNS {
	t.Helper()
	return harness.TestNetns(t, fmt.Sprintf("tbs-%s-%s", tag, role))
}

// in runs fn inside n and fails the test on error. fn must not call
// t.Fatal: it runs on another goroutine (see ns.NetNS.Do).
func in(t testing.TB, n ns.NetNS, fn func() error) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error { return fn() }); err != nil {
		t.Fatal(err)
	}
}

// doIn returns a runner that executes functions inside n.
func doIn(n ns.NetNS) func(func() error) error {
	return func(fn func() error) error { return n.Do(func(ns.NetNS) error { return fn() }) }
}

// listTables returns the nftables tables of the current namespace.
func listTables() ([]*nftables.Table, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	tables, err := c.ListTables()
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	return tables, nil
}
