package spoof

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/vishvananda/netns"
)

// requireRoot skips tests that create network namespaces and nftables
// objects; they never touch the machine's own namespace.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces and nftables tables")
	}
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("read random bytes: %v", err)
	}
	return hex.EncodeToString(b)
}

// newNS creates the named network namespace tbs-<tag>-<role> and removes it
// when the test ends, even on failure.
func newNS(t testing.TB, tag, role string) ns.NetNS {
	t.Helper()
	name := fmt.Sprintf("tbs-%s-%s", tag, role)
	errc := make(chan error, 1)
	go func() {
		// NewNamed moves the calling thread into the new namespace. The
		// thread stays locked, so the runtime discards it when this
		// goroutine ends and it can never run other goroutines there.
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		if err == nil {
			_ = h.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	n, err := ns.GetNS("/run/netns/" + name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
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
