package agent

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// socket is a packet socket bound to one port, read through the Go
// netpoller: a port costs a file descriptor, not a thread.
type socket struct {
	f       *os.File
	rc      syscall.RawConn
	ifindex int
	closed  atomic.Bool

	// mu orders drops against close, so the last read of the kernel's
	// count happens before the descriptor goes (the count goes with it).
	mu sync.Mutex
}

// htons of ETH_P_ALL: the protocol of a packet socket is in network order.
const ethPAll = uint16(unix.ETH_P_ALL<<8&0xff00 | unix.ETH_P_ALL>>8)

// openSocket opens the socket of the port with index ifindex in the
// calling thread's netns. It binds to ETH_P_ALL because only those
// sockets are fed before the ingress hook, where the port's table drops
// the requests; the filter is attached before the bind, so no frame
// reaches the socket unfiltered.
func openSocket(ifindex int, k filterKinds) (*socket, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open packet socket: %w", err)
	}
	if err := setUp(fd, ifindex, k); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("packet:%d", ifindex))
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	return &socket{f: f, rc: rc, ifindex: ifindex}, nil
}

func setUp(fd, ifindex int, k filterKinds) error {
	prog, err := assembled(k)
	if err != nil {
		return fmt.Errorf("assemble filter: %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("attach filter: %w", err)
	}
	// Frames sent out of the port (to the guest) are not requests; the
	// kernel skips them for us where it can (4.20+), the filter otherwise.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil && !errors.Is(err, unix.ENOPROTOOPT) {
		return fmt.Errorf("ignore outgoing frames: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: ethPAll, Ifindex: ifindex}); err != nil {
		return fmt.Errorf("bind packet socket: %w", err)
	}
	return nil
}

// read reads one frame into buf. n is the frame's real length, larger
// than len(buf) when it did not fit. It returns os.ErrClosed once close
// was called.
func (s *socket) read(buf []byte) (n int, err error) {
	rerr := s.rc.Read(func(fd uintptr) bool {
		n, _, err = unix.Recvfrom(int(fd), buf, unix.MSG_TRUNC)
		return !errors.Is(err, unix.EAGAIN)
	})
	if s.closed.Load() {
		// RawConn reports a closed file with an error of its own.
		return 0, os.ErrClosed
	}
	if rerr != nil {
		return 0, rerr
	}
	return n, err
}

// write sends one whole Ethernet frame out of the port.
func (s *socket) write(frame []byte) error {
	to := &unix.SockaddrLinklayer{Ifindex: s.ifindex, Halen: 6}
	copy(to.Addr[:], frame[:6])
	var err error
	werr := s.rc.Write(func(fd uintptr) bool {
		err = unix.Sendto(int(fd), frame, 0, to)
		return !errors.Is(err, unix.EAGAIN)
	})
	if werr != nil {
		return werr
	}
	return err
}

// drops is how many frames the kernel dropped for this socket (its
// receive queue was full) since the last call: reading the count resets
// it, so the caller must keep the sum. os.ErrClosed after close.
func (s *socket) drops() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return 0, os.ErrClosed
	}
	return s.readDrops()
}

func (s *socket) readDrops() (uint64, error) {
	var st *unix.TpacketStats
	var err error
	cerr := s.rc.Control(func(fd uintptr) {
		st, err = unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
	})
	if cerr != nil {
		return 0, cerr
	}
	if err != nil {
		return 0, fmt.Errorf("read packet socket statistics: %w", err)
	}
	return uint64(st.Drops), nil
}

// close ends every read in progress (with os.ErrClosed). It returns the
// drops not yet read by drops, which would otherwise be lost with the
// descriptor.
func (s *socket) close() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, derr := s.readDrops()
	s.closed.Store(true)
	return n, errors.Join(derr, s.f.Close())
}
