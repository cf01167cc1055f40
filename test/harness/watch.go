package harness

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// WatchHostAddrs samples, while plugins run, that the bridge in host has
// exactly one address in each subnet of hostAddrs that has users on disk
// (in stateDir), and none in the others; see sampleHostAddrs for how a
// sample stays consistent. stop reports the samples that counted and
// every violation seen (at most 20).
func WatchHostAddrs(t testing.TB, host Netns, stateDir, bridge string, hostAddrs ...string) (stop func() (int, []error)) {
	t.Helper()
	nsh, err := netns.GetFromPath(host.Path())
	if err != nil {
		t.Fatal(err)
	}
	nlh, err := netlink.NewHandleAt(nsh)
	nsh.Close()
	if err != nil {
		t.Fatal(err)
	}
	var subnets []netip.Prefix
	for _, ha := range hostAddrs {
		subnets = append(subnets, netip.MustParsePrefix(ha).Masked())
	}
	quit := make(chan struct{})
	var samples, skipped int
	var errs []error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-quit:
				return
			case <-time.After(10 * time.Millisecond):
			}
			counted, err := sampleHostAddrs(nlh, stateDir, bridge, subnets)
			if counted {
				samples++
			} else {
				skipped++
			}
			if err != nil && len(errs) < 20 {
				errs = append(errs, err)
			}
		}
	}()
	var once sync.Once
	stop = func() (int, []error) {
		once.Do(func() {
			close(quit)
			wg.Wait()
			nlh.Close()
			t.Logf("host-address watcher: %d samples, %d skipped (no lock file yet)", samples, skipped)
		})
		return samples, errs
	}
	t.Cleanup(func() { stop() }) // a test that stops early
	return stop
}

// sampleHostAddrs checks once; it reports whether the sample counted.
// First without the lock across the netlink read, so the watcher does not
// stall the plugins behind a busy RTNL; when a plugin took the lock in
// between (as it always may in a dense burst), once more with the lock
// held throughout, so every call yields a sample.
func sampleHostAddrs(nlh *netlink.Handle, stateDir, bridge string, subnets []netip.Prefix) (bool, error) {
	lock, err := OpenBridgeLock(stateDir, bridge)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer lock.Close()
	var before, after UsersView
	if err := lock.Hold(func() (err error) { before, err = lock.ReadUsers(bridge, subnets); return err }); err != nil {
		return false, err
	}
	list, err := bridgeAddrList(nlh, bridge)
	if err != nil {
		return false, err
	}
	if err := lock.Hold(func() (err error) { after, err = lock.ReadUsers(bridge, subnets); return err }); err != nil {
		return false, err
	}
	if after.Turn != before.Turn {
		err := lock.Hold(func() (err error) {
			if before, err = lock.ReadUsers(bridge, subnets); err != nil {
				return err
			}
			list, err = bridgeAddrList(nlh, bridge)
			return err
		})
		if err != nil {
			return false, err
		}
	}
	var errs []error
	for _, s := range subnets {
		n := 0
		for _, a := range list {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && s.Contains(ip.Unmap()) {
				n++
			}
		}
		if want := min(before.Users[s], 1); n != want {
			errs = append(errs, fmt.Errorf("%d users of %s on disk but %d addresses in it on %s", before.Users[s], s, n, bridge))
		}
	}
	return true, errors.Join(errs...)
}

func bridgeAddrList(nlh *netlink.Handle, bridge string) ([]netlink.Addr, error) {
	l, err := nlh.LinkByName(bridge)
	if err != nil {
		return nil, err
	}
	return nlh.AddrList(l, unix.AF_UNSPEC)
}
