package harness

import (
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

	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// The tests read the plugin's state directory the way the node agent and
// an operator do: through state.Reader, with no lock and no knowledge of
// its layout. Only the leak checks walk it, for names alone (every file
// for the CLEAN diff, lock files, temporary files).

// StateDir is what the plugin's state directory holds.
type StateDir struct {
	Records  map[string]state.Record // by attachment key; only those that decode
	Users    []string                // host-address users, as UserOf names them
	Locks    map[string]error        // bridge lock file → nil if free, else why it is held
	Held     map[string]error        // record file → nil if unlocked, else why: a record is its attachment's lock, which an IPAM plugin that a killed call left running holds
	Files    []string                // every file but the locks, relative to the dir
	Problems []error                 // torn or stray files: what must never be there, even after a crash
}

// ReadStateDir reads the state directory; a missing one is empty.
func ReadStateDir(dir string) (StateDir, error) {
	s := StateDir{Records: map[string]state.Record{}, Locks: map[string]error{}, Held: map[string]error{}}
	r := state.NewReader(dir)
	recs, err := r.Records()
	if err != nil {
		s.Problems = append(s.Problems, fmt.Errorf("records: %w", err))
	}
	for _, rec := range recs {
		s.Records[rec.Key] = rec
	}
	if err := s.readUsers(r); err != nil {
		s.Problems = append(s.Problems, err)
	}
	return s, s.walk(dir)
}

func (s *StateDir) readUsers(r state.Reader) error {
	bridges, err := r.Bridges()
	if err != nil {
		return err
	}
	for _, b := range bridges {
		subnets, err := r.Subnets(b)
		if err != nil {
			return fmt.Errorf("host-address state of %s: %w", b, err)
		}
		for _, v := range subnets {
			for _, key := range v.Users {
				s.Users = append(s.Users, UserOf(b, v.Subnet, key))
			}
		}
	}
	sort.Strings(s.Users)
	return nil
}

// walk lists every file but STATUS's kept kernel check and the agent's lock, checks every lock
// is free, and flags temporary files a writer must never leave.
func (s *StateDir) walk(dir string) error {
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil
		case err != nil:
			return err
		case d.IsDir():
			return nil
		case path == state.KernelCheckPath(dir), path == state.AgentLockPath(dir):
			return nil // STATUS's kept kernel check, the agent's lock: facts about the node, not leaks
		case d.Name() == "lock":
			s.Locks[path] = LockFree(path)
			return nil
		case strings.HasSuffix(d.Name(), ".json") && !strings.HasPrefix(d.Name(), "."):
			s.Held[path] = LockFree(path)
		}
		rel, _ := filepath.Rel(dir, path)
		s.Files = append(s.Files, rel)
		if strings.Contains(d.Name(), ".tmp") {
			s.Problems = append(s.Problems, fmt.Errorf("temporary file %s in the state dir", rel))
		}
		return nil
	})
	sort.Strings(s.Files)
	return err
}

// Sane checks what must hold at any instant, even right after a crash:
// every record decodes, no *.tmp, no bridge lock held once every plugin
// has exited. (A record, the attachment's lock, may still be held by the
// IPAM plugin of a killed call: see Quiet.)
func (s StateDir) Sane() error {
	errs := append([]error{}, s.Problems...)
	for _, err := range s.Locks {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Quiet is Sane once every process of every call has exited, IPAM
// plugins included: no lock at all is held.
func (s StateDir) Quiet() error {
	errs := []error{s.Sane()}
	for _, err := range s.Held {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// UserOf names a host-address user as StateDir.Users lists it.
func UserOf(bridge string, subnet netip.Prefix, key string) string {
	return bridge + "/" + subnet.Masked().String() + "/" + key
}

// bridgeState names a bridge's state without creating anything (the
// watcher reads it every few milliseconds; state.Open would make the
// directories).
func bridgeState(dir, bridge string) state.Bridge {
	return (&state.Store{Dir: dir}).Bridge(bridge)
}

// BridgeLock is the path of a bridge's lock file, made ready (its
// directory created) for a test that holds it from outside, as an
// operator would with flock(1).
func BridgeLock(dir, bridge string) (string, error) {
	path := bridgeState(dir, bridge).LockPath()
	return path, os.MkdirAll(filepath.Dir(path), 0o700)
}

// DropUser removes one host-address user (and the emptied set), as a DEL
// killed in the middle of the release leaves them.
func DropUser(dir, bridge string, subnet netip.Prefix, key string) error {
	_, err := bridgeState(dir, bridge).Subnet(subnet).Users().Remove(key)
	return err
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
	f      *os.File
	reader state.Reader
}

// OpenBridgeLock opens the bridge's lock file without taking it.
func OpenBridgeLock(dir, bridge string) (*BridgeLockFile, error) {
	f, err := os.OpenFile(bridgeState(dir, bridge).LockPath(), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &BridgeLockFile{f: f, reader: state.NewReader(dir)}, nil
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

// UsersView is what one hold of a bridge lock reads: how many times the
// lock changed hands, and the number of users of each subnet.
type UsersView struct {
	Turn  uint64
	Users map[netip.Prefix]int
}

// ReadUsers reads the view; the caller holds the lock.
func (l *BridgeLockFile) ReadUsers(bridge string, subnets []netip.Prefix) (UsersView, error) {
	v := UsersView{Users: map[netip.Prefix]int{}}
	var err error
	if v.Turn, err = l.reader.HandOvers(bridge); err != nil {
		return v, err
	}
	views, err := l.reader.Subnets(bridge)
	if err != nil {
		return v, err
	}
	for _, sv := range views {
		for _, s := range subnets {
			if sv.Subnet == s.Masked() {
				v.Users[s] = len(sv.Users)
			}
		}
	}
	return v, nil
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
