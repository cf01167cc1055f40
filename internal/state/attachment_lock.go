package state

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// AttachmentLock serialises the calls about one attachment (ADD, DEL, GC's
// teardown). Each call hands it to the IPAM plugin it runs, as an
// inherited descriptor, so the lock outlives a call that is killed while
// its IPAM plugin goes on: a DEL that follows waits for that IPAM ADD to
// finish instead of releasing nothing and letting it allocate afterwards.
type AttachmentLock struct {
	f    *os.File
	path string
}

func lockPathOf(dir, key string) string { return filepath.Join(recordDir(dir), key+".lock") }

// LockAttachment takes the lock of attachment key, waiting as Bridge.Lock
// does; ErrLockTimeout when a holder (a call, or the IPAM plugin of a
// killed one) keeps it for timeout.
func (s *Store) LockAttachment(key string, timeout time.Duration) (*AttachmentLock, error) {
	path := lockPathOf(s.Dir, key)
	f, err := openLocked(path, timeout, realPacer)
	if err != nil {
		return nil, fmt.Errorf("lock attachment %s: %w", key, err)
	}
	return &AttachmentLock{f: f, path: path}, nil
}

// File is the locked file, for a child process to inherit.
func (l *AttachmentLock) File() *os.File { return l.f }

// Remove unlinks the lock file while it is still held: the attachment is
// gone. A waiter that gets the old file notices and takes a new one.
func (l *AttachmentLock) Remove() error {
	if err := removeFile(l.path); err != nil {
		return fmt.Errorf("remove lock of attachment: %w", err)
	}
	return nil
}

// Unlock releases the lock (children that inherited it keep it until they
// exit).
func (l *AttachmentLock) Unlock() { l.f.Close() }
