package harness

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/internal/store"
)

// This file is the only one in test/ that knows the layout of the
// plugin's state directory (attachments/<key>.json,
// bridges/<bridge>/lock, bridges/<bridge>/subnets/<subnet>/users/<key>
// and .../owned): the tests read it through the functions below.

// StateDir is what the plugin's state directory holds.
type StateDir struct {
	Records  map[string]store.Record // by attachment key; only those that parse
	Users    []string                // host-address users, "bridge/subnet/key" (subnet as in its dir name: 10.77.0.0_24)
	Locks    map[string]error        // lock file → nil if free, else why it is held
	Files    []string                // every file but the locks, relative to the dir
	Problems []error                 // torn or stray files: what must never be there, even after a crash
}

// ReadStateDir reads the state directory; a missing one is empty.
func ReadStateDir(dir string) (StateDir, error) {
	s := StateDir{Records: map[string]store.Record{}, Locks: map[string]error{}}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		return s.readFile(path, rel)
	})
	sort.Strings(s.Users)
	sort.Strings(s.Files)
	return s, err
}

func (s *StateDir) readFile(path, rel string) error {
	name := filepath.Base(path)
	if name == "lock" {
		s.Locks[path] = LockFree(path)
		return nil
	}
	s.Files = append(s.Files, rel)
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	parts := strings.Split(rel, string(filepath.Separator))
	switch {
	case strings.Contains(name, ".tmp"):
		s.Problems = append(s.Problems, fmt.Errorf("temporary file %s in the state dir", rel))
	case len(parts) == 2 && parts[0] == "attachments" && strings.HasSuffix(name, ".json"):
		var rec store.Record
		if err := json.Unmarshal(data, &rec); err != nil || rec.ContainerID == "" {
			s.Problems = append(s.Problems, fmt.Errorf("record %s does not parse (%v): %q", rel, err, data))
			return nil
		}
		s.Records[strings.TrimSuffix(name, ".json")] = rec
	case len(parts) == 5 && parts[0] == "bridges" && parts[2] == "subnets" && parts[4] == "owned":
		if _, err := netip.ParsePrefix(strings.TrimSpace(string(data))); err != nil {
			s.Problems = append(s.Problems, fmt.Errorf("owned address %s does not parse: %q", rel, data))
		}
	case len(data) != 0:
		s.Problems = append(s.Problems, fmt.Errorf("set member %s is not empty: %q", rel, data))
	case len(parts) == 6 && parts[0] == "bridges" && parts[2] == "subnets" && parts[4] == "users":
		s.Users = append(s.Users, parts[1]+"/"+parts[3]+"/"+parts[5])
	}
	return nil
}

// Sane checks what must hold at any instant, even right after a crash:
// every file whole and parseable, no *.tmp, no lock held once every
// plugin has exited.
func (s StateDir) Sane() error {
	errs := append([]error{}, s.Problems...)
	for _, err := range s.Locks {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// UserOf names a host-address user as StateDir.Users lists it.
func UserOf(bridge string, subnet netip.Prefix, key string) string {
	return bridge + "/" + subnetDirName(subnet) + "/" + key
}

func subnetDirName(subnet netip.Prefix) string {
	return strings.ReplaceAll(subnet.Masked().String(), "/", "_")
}

func bridgeDir(dir, bridge string) string { return filepath.Join(dir, "bridges", bridge) }

func usersDir(dir, bridge string, subnet netip.Prefix) string {
	return filepath.Join(bridgeDir(dir, bridge), "subnets", subnetDirName(subnet), "users")
}

// BridgeLock is the path of a bridge's lock file, made ready (its
// directory created) for a test that holds it from outside.
func BridgeLock(dir, bridge string) (string, error) {
	if err := os.MkdirAll(bridgeDir(dir, bridge), 0o700); err != nil {
		return "", err
	}
	return filepath.Join(bridgeDir(dir, bridge), "lock"), nil
}

// DropUser removes one host-address user and the emptied users dir, as
// a DEL killed in the middle of the release leaves them.
func DropUser(dir, bridge string, subnet netip.Prefix, key string) error {
	users := usersDir(dir, bridge, subnet)
	if err := os.Remove(filepath.Join(users, key)); err != nil {
		return err
	}
	return os.Remove(users)
}

// LockFree fails if anyone holds the lock file (flock -n <file> true).
func LockFree(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("lock %s is held after every plugin exited: %w", path, err)
	}
	return unix.Flock(int(f.Fd()), unix.LOCK_UN)
}

// BridgeLockFile is a bridge's lock, opened to be held as a plugin holds
// it; fs.ErrNotExist until a plugin made it.
type BridgeLockFile struct {
	f   *os.File
	dir string
}

// OpenBridgeLock opens the bridge's lock file without taking it.
func OpenBridgeLock(dir, bridge string) (*BridgeLockFile, error) {
	f, err := os.OpenFile(filepath.Join(bridgeDir(dir, bridge), "lock"), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &BridgeLockFile{f: f, dir: dir}, nil
}

// Close closes the file (and so drops the lock if held).
func (l *BridgeLockFile) Close() error { return l.f.Close() }

// Hold runs fn with the lock held.
func (l *BridgeLockFile) Hold(fn func() error) error {
	if err := unix.Flock(int(l.f.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	defer unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	return fn()
}

// UsersView is what one hold of a bridge lock reads: the hand-over
// counter the plugin keeps in the lock file, and the number of users of
// each subnet.
type UsersView struct {
	Turn  uint64
	Users map[netip.Prefix]int
}

// ReadUsers reads the view; the caller holds the lock.
func (l *BridgeLockFile) ReadUsers(bridge string, subnets []netip.Prefix) UsersView {
	v := UsersView{Users: map[netip.Prefix]int{}}
	var b [8]byte
	if n, _ := l.f.ReadAt(b[:], 0); n == len(b) {
		v.Turn = binary.LittleEndian.Uint64(b[:])
	}
	for _, s := range subnets {
		users, _ := os.ReadDir(usersDir(l.dir, bridge, s))
		v.Users[s] = len(users)
	}
	return v
}

// WaitLocked waits until someone holds the lock file.
func WaitLocked(path string, limit time.Duration) error {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if LockFree(path) != nil {
			if _, err := os.Stat(path); err == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("nobody took %s within %s", path, limit)
}
