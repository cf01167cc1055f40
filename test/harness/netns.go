// Package harness builds sandbox nodes out of network namespaces and runs
// the plugin in them the way a runtime does. Every namespace it makes has
// a unique name and is removed by the test's cleanup; nothing is ever done
// in the machine's root network namespace.
package harness

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
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
		return Netns{}, fmt.Errorf("create netns %s: %w", name, err)
	}
	return Netns{Name: name}, nil
}

// Delete removes the netns; nil if it is already gone.
func (n Netns) Delete() error {
	if _, err := os.Stat(n.Path()); os.IsNotExist(err) {
		return nil
	}
	if err := netns.DeleteNamed(n.Name); err != nil {
		return fmt.Errorf("delete netns %s: %w", n.Name, err)
	}
	return nil
}

// Do runs fn on a locked thread inside the netns; child processes that fn
// starts inherit the netns.
func (n Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromPath(n.Path())
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", n.Name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", n.Name, err)
			return
		}
		// The thread stays locked and is discarded when this goroutine
		// ends, so no other goroutine ever runs in this netns by accident.
		errc <- fn()
	}()
	return <-errc
}
