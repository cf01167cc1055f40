package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Set is a directory of empty files, one per member. It is a reference
// count whose cost does not grow with its size: adding is one create,
// removing is one unlink, and "was that the last member?" is one rmdir
// that the kernel refuses while the directory is not empty. Callers hold
// the bridge lock.
//
// Members are not synced: they count kernel state (links, host
// addresses) that a power loss wipes anyway, Acquire re-adds an owned
// address whatever the count says, and GC's reconcile drops members whose
// durable record is gone; a sync would cost every ADD and DEL a journal
// commit for that.
type Set struct {
	dir string
}

// Add makes name a member; idempotent.
func (s Set) Add(name string) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create set %s: %w", s.dir, err)
	}
	f, err := os.OpenFile(filepath.Join(s.dir, name), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("add %s to set %s: %w", name, s.dir, err)
	}
	return f.Close()
}

// Remove drops name; it reports whether the set is now empty (and gone).
func (s Set) Remove(name string) (empty bool, err error) {
	if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("remove %s from set %s: %w", name, s.dir, err)
	}
	return s.RemoveIfEmpty()
}

// RemoveIfEmpty removes the set's directory if it has no members and
// reports whether the set is now gone.
func (s Set) RemoveIfEmpty() (bool, error) {
	err := os.Remove(s.dir)
	switch {
	case err == nil, errors.Is(err, fs.ErrNotExist):
		return true, nil
	case errors.Is(err, unix.ENOTEMPTY), errors.Is(err, unix.EEXIST):
		return false, nil
	}
	return false, fmt.Errorf("remove set %s: %w", s.dir, err)
}

// Has reports whether name is a member.
func (s Set) Has(name string) bool {
	_, err := os.Stat(filepath.Join(s.dir, name))
	return err == nil
}

// Members lists the set (GC only: this is the one O(n) call).
func (s Set) Members() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list set %s: %w", s.dir, err)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names, nil
}
