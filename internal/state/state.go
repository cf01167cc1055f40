// Package state owns tapbridge's node state directory (dataDir): one
// record per attachment, per-bridge locks, and per (bridge, subnet) the
// reference count of the host address and the address tapbridge added.
// No other package knows a path inside it: the plugin writes through
// Store, Bridge and Subnet, and every other reader (the node agent, tests,
// an operator) reads through Reader, without a lock.
//
// Every write is atomic (a file appears whole or not at all), so a SIGKILL
// at any instant leaves no torn state for the next call to trip on.
//
// Layout, relative to dataDir:
//
//	attachments/<key>.json                        the record (see Record), flocked as the attachment's lock (see RecordLock)
//	attachments/.<key>.json                       a complete record about to replace it
//	kernel-check                                  STATUS's kept kernel probe (see KernelCheck)
//	agent.lock                                    flocked by the node agent while it serves (see LockAgent)
//	bridges/<bridge>/lock                         the bridge lock (flock) and its hand-over counter
//	bridges/<bridge>/subnets/<subnet>/users/<key> one empty file per attachment using the subnet
//	bridges/<bridge>/subnets/<subnet>/owned       the address tapbridge added ("addr/len\n")
//	bridges/<bridge>/saved/<setting>              a device setting changed for a moment, to put back (see Saved)
//
// where <subnet> is the prefix with "/" written "_" (10.0.0.0_24).
package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrExists is returned when an attachment already has a record.
var ErrExists = errors.New("already exists")

// ErrNotFound is returned when an attachment has no record.
var ErrNotFound = errors.New("not found")

// Store is rooted at the configured dataDir, shared by every network on
// the node that uses the same dataDir.
type Store struct {
	Dir string
}

// Open makes sure the layout exists and is writable.
func Open(dir string) (*Store, error) {
	s := &Store{Dir: dir}
	for _, d := range []string{recordDir(dir), bridgesDir(dir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create state dir: %w", err)
		}
	}
	return s, nil
}

func recordDir(dir string) string  { return filepath.Join(dir, "attachments") }
func bridgesDir(dir string) string { return filepath.Join(dir, "bridges") }

func recordPath(dir, key string) string { return filepath.Join(recordDir(dir), key+".json") }

// stagedPath is where Publish makes the complete record whole before it
// renames it over the claim. The leading dot keeps it out of listings.
func stagedPath(dir, key string) string { return filepath.Join(recordDir(dir), "."+key+".json") }

// recordKey is the key of a record file's name; ok is false for any other
// file (a staged record, a stray file).
func recordKey(name string) (key string, ok bool) {
	if strings.HasPrefix(name, ".") {
		return "", false
	}
	return strings.CutSuffix(name, ".json")
}

// Create publishes the claim of an attachment (r with PhaseAdding),
// durably, and returns its lock, taken before the claim appears; it fails
// with ErrExists if the key has a record, which is what makes a second ADD
// of a live attachment fail early.
func (s *Store) Create(key string, r Record) (*RecordLock, error) {
	data, err := encode(r)
	if err != nil {
		return nil, fmt.Errorf("encode record %s: %w", key, err)
	}
	f, err := createExclusive(recordPath(s.Dir, key), data)
	if err != nil {
		return nil, err
	}
	return &RecordLock{f: f}, nil
}

// Publish replaces the record of key with r in one atomic step: a reader
// sees the claim or r, never a mix, and so does the node after a power
// loss (r's content is synced before it is named). Only the ADD that made
// the claim calls it.
func (s *Store) Publish(key string, r Record) error {
	if err := s.Stage(key, r); err != nil {
		return err
	}
	return s.Commit(key)
}

// Stage makes r whole and durable beside key's record, where only Commit
// (or Delete) uses it: the slow half of Publish, which a caller can run
// while it does other work.
func (s *Store) Stage(key string, r Record) error {
	data, err := encode(r)
	if err != nil {
		return fmt.Errorf("encode record %s: %w", key, err)
	}
	return stage(stagedPath(s.Dir, key), data)
}

// Commit puts the record Stage made in place of key's record, in one
// rename.
func (s *Store) Commit(key string) error {
	return commit(stagedPath(s.Dir, key), recordPath(s.Dir, key))
}

// Unstage drops what Stage wrote, leaving the record as it is.
func (s *Store) Unstage(key string) error {
	if err := removeFile(stagedPath(s.Dir, key)); err != nil {
		return fmt.Errorf("unstage record %s: %w", key, err)
	}
	return nil
}

// Get reads one record.
func (s *Store) Get(key string) (Record, error) {
	return getRecord(s.Dir, key)
}

func getRecord(dir, key string) (Record, error) {
	data, err := readFile(recordPath(dir, key))
	if errors.Is(err, ErrNotFound) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("read record %s: %w", key, err)
	}
	r, err := decode(key, data)
	if e, ok := errors.AsType[*UnreadableError](err); ok {
		e.Path = recordPath(dir, key)
	}
	return r, err
}

// Delete removes a record, and a staged one a crash left; nil if they are
// already gone. The staged one goes first, so a crash in between leaves
// the record for the retried DEL to find.
func (s *Store) Delete(key string) error {
	if err := removeFile(stagedPath(s.Dir, key)); err != nil {
		return fmt.Errorf("delete record %s: %w", key, err)
	}
	if err := removeFile(recordPath(s.Dir, key)); err != nil {
		return fmt.Errorf("delete record %s: %w", key, err)
	}
	return nil
}

// Keys lists every recorded attachment. Only GC calls it.
func (s *Store) Keys() ([]string, error) {
	return listKeys(s.Dir)
}

func listKeys(dir string) ([]string, error) {
	entries, err := os.ReadDir(recordDir(dir))
	if err != nil {
		return nil, fmt.Errorf("list records: %w", err)
	}
	keys := make([]string, 0, len(entries))
	for _, e := range entries {
		if key, ok := recordKey(e.Name()); ok {
			keys = append(keys, key)
		}
	}
	return keys, nil
}

// Writable reports whether new state can be written (STATUS).
func (s *Store) Writable() error {
	f, err := os.CreateTemp(s.Dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("state dir %s is not writable: %w", s.Dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}
