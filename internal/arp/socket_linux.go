package arp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// recvBufLen holds any frame on a standard-MTU link. Longer frames are
// truncated, which is harmless: only an ARP packet's first 42 bytes are
// ever parsed.
const recvBufLen = 2048

// packetConn is an AF_PACKET SOCK_RAW socket bound to one link and to
// ARP. It is registered with the Go runtime poller so that reads obey
// deadlines and can be interrupted.
type packetConn struct {
	f   *os.File
	raw syscall.RawConn
	to  *unix.SockaddrLinklayer
	buf []byte
}

// listen opens a packet socket on ifindex that receives ARP frames.
func listen(ifindex int) (*packetConn, error) {
	// Protocol 0 receives nothing until bind, so no frame from another link
	// or of another type is queued while the socket is being set up.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open packet socket: %w", err)
	}
	to := &unix.SockaddrLinklayer{Ifindex: ifindex, Protocol: htons(etherTypeARP)}
	if err := unix.Bind(fd, to); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind packet socket: %w", err)
	}
	// os.NewFile sees the non-blocking flag and registers the fd with the
	// runtime poller; from here on the File owns the fd.
	f := os.NewFile(uintptr(fd), "packet")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	return &packetConn{f: f, raw: raw, to: to, buf: make([]byte, recvBufLen)}, nil
}

// send transmits one complete Ethernet frame on the bound link.
func (c *packetConn) send(frame []byte) error {
	var err error
	werr := c.raw.Write(func(fd uintptr) bool {
		err = unix.Sendto(int(fd), frame, 0, c.to)
		return err != unix.EAGAIN // wait for room in the send buffer
	})
	if werr != nil {
		return fmt.Errorf("send: %w", werr)
	}
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// recv returns the next frame, valid until the following recv, and whether
// this host transmitted it rather than received it.
func (c *packetConn) recv() (frame []byte, outgoing bool, err error) {
	var n int
	var from unix.Sockaddr
	rerr := c.raw.Read(func(fd uintptr) bool {
		n, from, err = unix.Recvfrom(int(fd), c.buf, 0)
		return err != unix.EAGAIN // wait for a frame
	})
	if rerr != nil {
		return nil, false, fmt.Errorf("receive: %w", rerr)
	}
	if err != nil {
		return nil, false, fmt.Errorf("receive: %w", err)
	}
	ll, ok := from.(*unix.SockaddrLinklayer)
	outgoing = ok && ll.Pkttype == unix.PACKET_OUTGOING
	return c.buf[:n], outgoing, nil
}

func (c *packetConn) setReadDeadline(t time.Time) error {
	if err := c.f.SetReadDeadline(t); err != nil {
		return fmt.Errorf("set deadline: %w", err)
	}
	return nil
}

// interrupt makes any pending or future read or write fail with a timeout.
// It may be called from another goroutine.
func (c *packetConn) interrupt() {
	_ = c.f.SetDeadline(time.Now())
}

// close releases the socket. The kernel waits for an RCU grace period here
// (packet_release calls synchronize_net), often longer than an answer takes
// to arrive; it is still done synchronously so that InUse leaves nothing
// running behind it.
func (c *packetConn) close() {
	_ = c.f.Close()
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// htons converts to network byte order, which sockaddr_ll and the socket
// protocol argument expect and x/sys/unix passes through unchanged.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
