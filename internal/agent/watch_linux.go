package agent

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// watcher reports changes to the records directory (inotify, through the
// Go netpoller). The plugin publishes a record by a rename into the
// directory, its claim appears by a link and it goes by an unlink; a file
// rewritten in place (by an operator, or a future writer) is seen when it
// is closed.
type watcher struct {
	f  *os.File
	rc syscall.RawConn
}

const watchMask = unix.IN_MOVED_TO | unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_CLOSE_WRITE |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// errDirGone is returned once the watched directory is removed or moved:
// no record can appear in it any more.
var errDirGone = errors.New("records directory removed")

// change is one entry that changed, or an overflow (the kernel's queue
// was full and events were lost: everything must be read again).
type change struct {
	name     string
	overflow bool
}

func newWatcher(dir string) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, watchMask); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), "inotify:"+dir)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("inotify: %w", err)
	}
	return &watcher{f: f, rc: rc}, nil
}

// read waits for the next batch of changes. It returns os.ErrClosed once
// close was called.
func (w *watcher) read(buf []byte) ([]change, error) {
	var n int
	var err error
	rerr := w.rc.Read(func(fd uintptr) bool {
		n, err = unix.Read(int(fd), buf)
		return !errors.Is(err, unix.EAGAIN)
	})
	if rerr != nil {
		return nil, rerr
	}
	if err != nil {
		return nil, fmt.Errorf("read inotify: %w", err)
	}
	return parseEvents(buf[:n])
}

func parseEvents(b []byte) ([]change, error) {
	var out []change
	for len(b) >= unix.SizeofInotifyEvent {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&b[0]))
		end := unix.SizeofInotifyEvent + int(ev.Len)
		if end > len(b) {
			break
		}
		name := b[unix.SizeofInotifyEvent:end]
		for len(name) > 0 && name[len(name)-1] == 0 {
			name = name[:len(name)-1]
		}
		switch {
		case ev.Mask&unix.IN_Q_OVERFLOW != 0:
			out = append(out, change{overflow: true})
		case ev.Mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED) != 0:
			return out, errDirGone
		case len(name) > 0:
			out = append(out, change{name: string(name)})
		}
		b = b[end:]
	}
	return out, nil
}

// close ends a read in progress.
func (w *watcher) close() error { return w.f.Close() }
