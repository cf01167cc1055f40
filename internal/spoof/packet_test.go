package spoof

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// AF_PACKET sockets for the data-path test. A socket belongs to the network
// namespace it was created in, so open them inside ns.Do and use them from
// anywhere afterwards.

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSocket is bound to one interface of the namespace it was opened in.
type packetSocket struct {
	fd      int
	ifindex int
	ifname  string
}

// openSender opens a socket that writes raw frames on ifname. Protocol 0
// means it receives nothing.
func openSender(ifname string) (*packetSocket, error) {
	return openPacket(ifname, 0)
}

// openCapture opens a socket that sees every frame on ifname.
func openCapture(ifname string) (*packetSocket, error) {
	s, err := openPacket(ifname, htons(unix.ETH_P_ALL))
	if err != nil {
		return nil, err
	}
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		s.Close()
		return nil, fmt.Errorf("set receive timeout on %s: %w", ifname, err)
	}
	return s, nil
}

func openPacket(ifname string, proto uint16) (*packetSocket, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("find interface %s: %w", ifname, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, fmt.Errorf("open packet socket on %s: %w", ifname, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("bind packet socket to %s: %w", ifname, err)
	}
	return &packetSocket{fd: fd, ifindex: ifi.Index, ifname: ifname}, nil
}

func (s *packetSocket) Close() { _ = unix.Close(s.fd) }

func (s *packetSocket) send(frame []byte) error {
	if err := unix.Sendto(s.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: s.ifindex}); err != nil {
		return fmt.Errorf("send frame on %s: %w", s.ifname, err)
	}
	return nil
}

// drain returns the frames received since the socket was opened or last
// drained, ignoring the interface's own outgoing frames. It stops when the
// socket has been quiet for the receive timeout.
func (s *packetSocket) drain() ([][]byte, error) {
	var frames [][]byte
	buf := make([]byte, 65536)
	for {
		n, from, err := unix.Recvfrom(s.fd, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			return frames, nil
		}
		if err != nil {
			return frames, fmt.Errorf("receive on %s: %w", s.ifname, err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		frames = append(frames, append([]byte(nil), buf[:n]...))
	}
}

// readUntil returns the frames received up to and including the first one
// that carries marker, ignoring the interface's own outgoing frames; it
// fails if that frame has not arrived within timeout.
func (s *packetSocket) readUntil(marker []byte, timeout time.Duration) ([][]byte, error) {
	var frames [][]byte
	buf := make([]byte, 65536)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		n, from, err := unix.Recvfrom(s.fd, buf, 0)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue // EAGAIN: the receive timeout, the deadline decides
		}
		if err != nil {
			return frames, fmt.Errorf("receive on %s: %w", s.ifname, err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		frames = append(frames, append([]byte(nil), buf[:n]...))
		if bytes.Contains(buf[:n], marker) {
			return frames, nil
		}
	}
	return frames, fmt.Errorf("frame %q did not arrive on %s within %v", marker, s.ifname, timeout)
}
