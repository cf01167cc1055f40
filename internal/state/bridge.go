package state

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Bridge is the state shared by every attachment on one bridge, on any
// network of the node: its lock and its subnets' host-address state.
type Bridge struct {
	Name string
	dir  string
}

// Bridge returns the state of the bridge called name.
func (s *Store) Bridge(name string) Bridge {
	return Bridge{Name: name, dir: filepath.Join(bridgesDir(s.Dir), name)}
}

// LockBridge takes the lock of the bridge called name (see Bridge.Lock).
func (s *Store) LockBridge(name string, timeout time.Duration) (Unlock, error) {
	return s.Bridge(name).Lock(timeout)
}

// Lock serialises every change to the bridge's shared state (host
// addresses and their reference counts). flock is released by the kernel
// when a process dies, so a crash never leaves it held.
func (b Bridge) Lock(timeout time.Duration) (Unlock, error) {
	if err := os.MkdirAll(b.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", b.dir, err)
	}
	return lockFile(lockPath(b.dir), timeout, realPacer)
}

func lockPath(bridgeDir string) string { return filepath.Join(bridgeDir, "lock") }

// LockPath is the file Lock flocks: an operator (or a test) that must stop
// every change to the bridge's state holds it with flock(1).
func (b Bridge) LockPath() string { return lockPath(b.dir) }

func subnetsDir(bridgeDir string) string { return filepath.Join(bridgeDir, "subnets") }

// Subnet returns the host-address state of one subnet of the bridge.
func (b Bridge) Subnet(p netip.Prefix) Subnet {
	p = p.Masked()
	name := strings.ReplaceAll(p.String(), "/", "_")
	return Subnet{Prefix: p, dir: filepath.Join(subnetsDir(b.dir), name)}
}

// Subnets lists the subnets with state on this bridge (a handful).
func (b Bridge) Subnets() ([]Subnet, error) {
	entries, err := os.ReadDir(subnetsDir(b.dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list subnets of bridge %s: %w", b.Name, err)
	}
	var out []Subnet
	for _, e := range entries {
		if p, err := netip.ParsePrefix(strings.ReplaceAll(e.Name(), "_", "/")); err == nil {
			out = append(out, b.Subnet(p))
		}
	}
	return out, nil
}

// Subnet is the host-address state of one (bridge, subnet): who uses the
// address, and which address tapbridge added, if it did. An admin's
// address is used with no owned address recorded. Callers hold the
// bridge lock to change it.
type Subnet struct {
	Prefix netip.Prefix
	dir    string
}

// Users is the subnet's reference count: one member per attachment key.
func (s Subnet) Users() Set {
	return Set{dir: filepath.Join(s.dir, "users")}
}

func (s Subnet) ownedPath() string { return filepath.Join(s.dir, "owned") }

// Owned reads the address tapbridge added on the subnet, if any.
func (s Subnet) Owned() (netip.Prefix, bool, error) {
	data, err := readFile(s.ownedPath())
	if errors.Is(err, ErrNotFound) {
		return netip.Prefix{}, false, nil
	}
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("read owned address of %s: %w", s.Prefix, err)
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(string(data)))
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("decode owned address of %s: %w", s.Prefix, err)
	}
	return p, true, nil
}

// CreateOwned records p as the address tapbridge adds on the subnet. It
// is written before the address is added, so a crash in between still
// lets the last release remove it; it fails with ErrExists if there is
// one already.
func (s Subnet) CreateOwned(p netip.Prefix) error {
	return createFile(s.ownedPath(), []byte(p.String()+"\n"))
}

// RemoveOwned forgets the owned address (nil if there is none), then
// removes the subnet's directory once nothing else is in it.
func (s Subnet) RemoveOwned() error {
	if err := removeFile(s.ownedPath()); err != nil {
		return err
	}
	err := os.Remove(s.dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("remove %s: %w", s.dir, err)
	}
	return nil
}
