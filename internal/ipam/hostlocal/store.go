package hostlocal

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/disk"
	"golang.org/x/sys/unix"
)

// DefaultDataDir is where the binary keeps its store when the config
// names none (backend/disk's default, which that package does not export).
const DefaultDataDir = "/var/lib/cni/networks"

// store is upstream's disk store (its files, written by its code) with a
// lock that gives up when the call's context ends. The lock is the same
// flock on <dataDir>/<network>/lock that the binary takes, on a
// descriptor of our own: flock excludes every other open of the file, in
// this process and in any other, so an exec'd host-local and this one
// allocate from one store in turn. The binary blocks on the lock for
// good; here ipamTimeout bounds the wait, as it bounds an exec'd IPAM.
type store struct {
	*disk.Store
	ctx  context.Context
	lock *os.File
}

var _ backend.Store = (*store)(nil)

// openStore opens the network's store, making its directory and lock
// file as the binary does (disk.New). disk.New also opens the lock with
// a descriptor that is not close-on-exec; it is closed at once, so no
// process tapbridge starts meanwhile can inherit it.
func openStore(ctx context.Context, conf *ipamConf) (*store, error) {
	d, err := disk.New(conf.name, conf.DataDir)
	if err != nil {
		return nil, err
	}
	if err := d.Close(); err != nil {
		return nil, err
	}
	dir := conf.DataDir
	if dir == "" {
		dir = DefaultDataDir
	}
	lock, err := os.Open(filepath.Join(dir, conf.name, "lock"))
	if err != nil {
		return nil, err
	}
	return &store{Store: d, ctx: ctx, lock: lock}, nil
}

// Back-off between tries of a lock another call holds: an allocation
// holds it for well under a millisecond.
const (
	lockRetry    = 200 * time.Microsecond
	maxLockRetry = 10 * time.Millisecond
)

// Lock takes the store's lock, trying until the call's context ends.
func (s *store) Lock() error {
	fd := int(s.lock.Fd())
	for delay := lockRetry; ; delay = min(2*delay, maxLockRetry) {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("lock %s: %w", s.lock.Name(), err)
		}
		select {
		case <-s.ctx.Done():
			return fmt.Errorf("lock %s: %w", s.lock.Name(), s.ctx.Err())
		case <-time.After(delay):
		}
	}
}

// Reserve reserves ip as upstream's store does, and takes back a torn
// reservation on the way: upstream creates the address's file, then
// writes the owner into it, so a process killed in between leaves an
// empty file that no DEL will ever match. In process, tapbridge's own
// SIGKILL is that process (an exec'd host-local would have finished its
// write). Every writer reserves under the lock we hold, so an empty file
// seen now is a dead writer's, never one being written: it is removed
// and the reservation tried again. Only the address being tried is
// looked at, so the call's cost does not grow with the store.
func (s *store) Reserve(id, ifname string, ip net.IP, rangeID string) (bool, error) {
	ok, err := s.Store.Reserve(id, ifname, ip, rangeID)
	if ok || err != nil || !s.reclaimTorn(ip) {
		return ok, err
	}
	return s.Store.Reserve(id, ifname, ip, rangeID)
}

// sweepTorn removes every torn reservation (see Reserve) of the store,
// which DEL does once: a DEL must leave nothing of an ADD that was
// killed, and a torn file names no owner that a DEL could match.
// Upstream's release already reads every file of the store, so one more
// listing keeps the call's cost of the same order.
func (s *store) sweepTorn() error {
	if err := s.Lock(); err != nil {
		return err
	}
	defer s.Unlock()
	s.removeTorn()
	return nil
}

// removeTorn removes the empty address files of the store; the caller
// holds its lock, so none is being written.
func (s *store) removeTorn() {
	dir := filepath.Dir(s.lock.Name())
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || net.ParseIP(e.Name()) == nil {
			continue
		}
		if info, err := e.Info(); err == nil && info.Size() == 0 {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// reclaimTorn removes ip's file if it is empty, and says whether it did.
func (s *store) reclaimTorn(ip net.IP) bool {
	path := disk.GetEscapedPath(filepath.Dir(s.lock.Name()), ip.String())
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != 0 {
		return false
	}
	return os.Remove(path) == nil
}

// releaseLeased removes the files of the given addresses that name the
// attachment (as upstream's release matches a file: the container and
// interface, or, as releases before the interface was recorded wrote,
// the container alone). A file gone, naming another owner, or that
// cannot be read (upstream's release passes such files by) is left be.
func (s *store) releaseLeased(id, ifname string, ips []net.IP) error {
	if err := s.Lock(); err != nil {
		return err
	}
	defer s.Unlock()
	dir := filepath.Dir(s.lock.Name())
	owner, oldOwner := strings.TrimSpace(id)+disk.LineBreak+ifname, strings.TrimSpace(id)
	var errs []error
	for _, ip := range ips {
		path := disk.GetEscapedPath(dir, ip.String())
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		if got := strings.TrimSpace(string(data)); got != owner && got != oldOwner {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Unlock releases the store's lock.
func (s *store) Unlock() error { return unix.Flock(int(s.lock.Fd()), unix.LOCK_UN) }

// Close releases the lock if held and closes it.
func (s *store) Close() error { return s.lock.Close() }

// holds reports whether the store has an address of the attachment: one
// whose file names the container and interface, or, as files written by
// releases before the interface was recorded, the container alone.
func (s *store) holds(id, ifname string) (bool, error) {
	if err := s.Lock(); err != nil {
		return false, err
	}
	defer s.Unlock()
	found, err := s.FindByKey(strings.TrimSpace(id) + disk.LineBreak + ifname)
	if !found && err == nil {
		found, _ = s.FindByKey(strings.TrimSpace(id))
	}
	return found, nil
}
