package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// RecordLock is the flock of an attachment's record: it serialises the
// calls about one attachment (ADD, DEL, GC's teardown). Each call hands it
// to the IPAM plugin it runs, as an inherited descriptor, so the lock
// outlives a call that is killed while its IPAM plugin goes on: a DEL that
// follows waits for that IPAM ADD to finish instead of releasing nothing
// and letting it allocate afterwards. The record is the lock, so an
// attachment has no other file to leave behind.
type RecordLock struct {
	f *os.File
}

// File is the locked file, for a child process to inherit.
func (l *RecordLock) File() *os.File {
	if l == nil {
		return nil
	}
	return l.f
}

// Unlock releases the lock (children that inherited it keep it until they
// exit). A nil lock is a no-op.
func (l *RecordLock) Unlock() {
	if l != nil {
		l.f.Close()
	}
}

// LockRecord takes the lock of key's record; ErrNotFound when there is no
// record (nothing of the attachment is left for anyone to be working on),
// ErrLockTimeout when a holder (a call, or the IPAM plugin of a killed
// one) keeps it for timeout. A record replaced (by ADD's publish) or
// removed while waiting is looked up again.
func (s *Store) LockRecord(key string, timeout time.Duration) (*RecordLock, error) {
	path := recordPath(s.Dir, key)
	for {
		f, err := os.OpenFile(path, os.O_RDONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNotFound
		}
		if err != nil {
			return nil, fmt.Errorf("lock record %s: %w", key, err)
		}
		if err := takeLock(f, timeout, realPacer); err != nil {
			if !errors.Is(err, ErrLockTimeout) { // a timed-out wait closes f itself
				f.Close()
			}
			return nil, fmt.Errorf("lock record %s: %w", key, err)
		}
		if stillAt(f, path) {
			return &RecordLock{f: f}, nil
		}
		f.Close()
	}
}
