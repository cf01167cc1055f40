// Package harness builds sandbox nodes out of network namespaces and runs
// the plugin in them the way a runtime does. Every namespace it makes has
// a unique name and is removed by the test's cleanup; nothing is ever done
// in the machine's root network namespace.
package harness

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named namespaces live (as `ip netns` makes them).
const NetnsDir = "/var/run/netns"

// RunID is a fresh random tag for names, e.g. "tbt-1a2b3c4d".
func RunID(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// Netns is a named network namespace the harness made.
type Netns struct {
	Name string
}

// Path is the bind mount path runtimes pass as CNI_NETNS.
func (n Netns) Path() string { return filepath.Join(NetnsDir, n.Name) }

// NewNetns creates a named netns without moving the caller's thread.
func NewNetns(name string) (Netns, error) {
	if err := mountNetnsDir(); err != nil {
		return Netns{}, err
	}
	errc := make(chan error, 1)
	go func() {
		// NewNamed switches the thread into the new netns; the thread is
		// locked and never unlocked, so Go discards it afterwards.
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		// NewNamed leaves its file behind when the bind mount fails.
		return Netns{}, errors.Join(fmt.Errorf("create netns %s: %w", name, err), Netns{Name: name}.Delete())
	}
	return Netns{Name: name}, nil
}

var netnsDirMount struct {
	once sync.Once
	err  error
}

// mountNetnsDir makes NetnsDir a shared mount point of its own, as `ip
// netns add` does the first time it runs. A netns bound beneath a plain
// NetnsDir is hidden the moment another process's `ip netns add` does
// that, and can then be neither unmounted nor removed (EINVAL, EBUSY).
func mountNetnsDir() error {
	m := &netnsDirMount
	m.once.Do(func() {
		if m.err = os.MkdirAll(NetnsDir, 0o755); m.err != nil {
			return
		}
		m.err = unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if errors.Is(m.err, unix.EINVAL) { // not a mount point yet
			if m.err = unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); m.err == nil {
				m.err = unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
			}
		}
		if m.err != nil {
			m.err = fmt.Errorf("make %s a shared mount point: %w", NetnsDir, m.err)
		}
	})
	return m.err
}

// TestNetns makes a named netns that lives as long as test t (its cleanup
// removes it, even half-made) and returns it opened.
func TestNetns(t testing.TB, name string) ns.NetNS {
	t.Helper()
	n := Netns{Name: name}
	t.Cleanup(func() {
		if err := n.Delete(); err != nil {
			t.Error(err)
		}
	})
	if _, err := NewNetns(name); err != nil {
		t.Fatal(err)
	}
	h, err := ns.GetNS(n.Path())
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// Delete removes the netns; nil if it is already gone, or was never made
// (a zero Netns: its path would be NetnsDir itself, every netns's mount
// point). A half-made one, its file there but never mounted, goes too.
func (n Netns) Delete() error {
	if n.Name == "" {
		return nil
	}
	err := unix.Unmount(n.Path(), unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete netns %s: %w", n.Name, err)
	}
	if err := os.Remove(n.Path()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", n.Name, err)
	}
	return nil
}

// Do runs fn on a locked thread inside the netns; child processes that fn
// starts inherit the netns. An fn that ends its goroutine without
// returning (a t.Fatal) makes Do return an error instead of hanging.
func (n Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		returned := false
		defer func() {
			if !returned {
				errc <- fmt.Errorf("in netns %s: the function ended its goroutine (t.Fatal?) instead of returning", n.Name)
			}
		}()
		runtime.LockOSThread()
		h, err := netns.GetFromPath(n.Path())
		if err != nil {
			returned = true
			errc <- fmt.Errorf("open netns %s: %w", n.Name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			returned = true
			errc <- fmt.Errorf("enter netns %s: %w", n.Name, err)
			return
		}
		// The thread stays locked and is discarded when this goroutine
		// ends, so no other goroutine ever runs in this netns by accident.
		err = fn()
		returned = true
		errc <- err
	}()
	return <-errc
}
