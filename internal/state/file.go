package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// createExclusive makes path appear with data, whole and durable, or fails
// with ErrExists, and returns the new file open and flocked: the lock is
// taken before the name appears, so nobody else ever holds it first. An
// O_TMPFILE inode has no name until linkat gives it one, so a crash
// mid-write leaves nothing behind; where O_TMPFILE is not supported a
// named temporary file is linked instead. The data is synced before the
// name appears and the directory after, so a power loss never brings back
// a name without its content, nor loses a claim an ADD acted on.
func createExclusive(path string, data []byte) (*os.File, error) {
	f, err := createWithTmpfile(path, data)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) {
		f, err = createWithLink(path, data)
	}
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create %s: %w", path, ErrExists)
	}
	if err != nil {
		return nil, err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		// Not published after all: the caller registers no undo for it.
		f.Close()
		return nil, errors.Join(err, removeFile(path))
	}
	return f, nil
}

func createWithTmpfile(path string, data []byte) (*os.File, error) {
	f, err := openTmpfile(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	err = writeSynced(f, data)
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := linkTmpfile(f, path); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func openTmpfile(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// linkTmpfile gives an O_TMPFILE inode its name; it fails if the name
// exists.
func linkTmpfile(f *os.File, path string) error {
	proc := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	if err := unix.Linkat(unix.AT_FDCWD, proc, unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW); err != nil {
		return fmt.Errorf("publish %s: %w", path, err)
	}
	return nil
}

func createWithLink(path string, data []byte) (*os.File, error) {
	tmp := path + ".tmp." + strconv.Itoa(os.Getpid())
	defer os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", tmp, err)
	}
	err = writeSynced(f, data)
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
	}
	if err == nil {
		err = os.Link(tmp, path)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("publish %s: %w", path, err)
	}
	return f, nil
}

// stage makes data whole and durable at staged, in the record's
// directory, which only its one writer uses: an O_TMPFILE inode is linked
// there once it is complete and synced, so even a crash leaves at staged a
// whole file (that Delete removes), never a torn one.
func stage(staged string, data []byte) error {
	if err := removeFile(staged); err != nil { // a crashed writer's
		return err
	}
	f, err := openTmpfile(filepath.Dir(staged))
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) {
		return writeFileSynced(staged, data)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", staged, err)
	}
	defer f.Close()
	if err := writeSynced(f, data); err != nil {
		return fmt.Errorf("write %s: %w", staged, err)
	}
	return linkTmpfile(f, staged)
}

// commit renames staged over path, so a reader sees the old content or the
// new, never a mix. The rename itself is not synced: a power loss that
// undoes it leaves the old content, which is all the callers need (the
// claim a complete record replaces serves DEL and GC as well).
func commit(staged, path string) error {
	if err := os.Rename(staged, path); err != nil {
		return fmt.Errorf("publish %s: %w", path, err)
	}
	return nil
}

func writeSynced(f *os.File, data []byte) error {
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Sync()
}

func writeFileSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	err = writeSynced(f, data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// syncDir makes the directory's entries (a new or renamed name) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// readFile returns a small state file, or ErrNotFound.
func readFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	return data, err
}

// createFile publishes a small state file exclusively (see createExclusive).
func createFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	f, err := createExclusive(path, data)
	if err != nil {
		return err
	}
	return f.Close()
}

// removeFile deletes a state file; nil if it is already gone.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}
