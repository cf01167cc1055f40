package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// StreamInterval is how often a Stream sends a line.
const StreamInterval = 100 * time.Millisecond

// streamTimeout bounds the wait for one echo: long enough for TCP to
// retransmit across a migration's switch-over on a slow TCG guest.
const streamTimeout = 60 * time.Second

// Stream is one TCP connection to a guest's echo responder (EchoPort)
// kept open: a numbered line every StreamInterval, each echo awaited
// before the next line.
type Stream struct {
	conn net.Conn
	quit chan struct{}
	done chan struct{}
	once sync.Once

	mu          sync.Mutex
	echoed      int
	lastEcho    time.Time
	longestWait time.Duration // longest time from sending a line to its echo
	err         error
}

// StreamResult sums up a stream.
type StreamResult struct {
	Echoed      int
	LongestWait time.Duration
	Err         error // why the connection broke, or nil
}

func (r StreamResult) String() string {
	if r.Err != nil {
		return fmt.Sprintf("broke after %d lines: %v", r.Echoed, r.Err)
	}
	return fmt.Sprintf("%d lines echoed on one connection, longest wait for an echo %v", r.Echoed, r.LongestWait.Round(time.Millisecond))
}

// StartStream connects from src in ns to dst:EchoPort and starts the
// exchange; Close stops it too.
func (c *Cluster) StartStream(ns harness.Netns, src, dst netip.Addr) (*Stream, error) {
	var conn net.Conn
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		var err error
		conn, err = d.Dial("tcp", netip.AddrPortFrom(dst, EchoPort).String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tcp stream to %s: %w", dst, err)
	}
	s := &Stream{conn: conn, quit: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	c.onClose(func() error { s.Stop(); return nil })
	return s, nil
}

func (s *Stream) run() {
	defer close(s.done)
	defer s.conn.Close()
	r := bufio.NewReader(s.conn)
	t := time.NewTicker(StreamInterval)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		if err := s.exchange(r, i); err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
	}
}

// exchange sends line i and waits for its echo.
func (s *Stream) exchange(r *bufio.Reader, i int) error {
	line := fmt.Sprintf("tapbridge-stream %d\n", i)
	start := time.Now()
	_ = s.conn.SetDeadline(start.Add(streamTimeout))
	if _, err := s.conn.Write([]byte(line)); err != nil {
		return fmt.Errorf("send line %d: %w", i, err)
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read echo of line %d: %w", i, err)
	}
	if got != line {
		return fmt.Errorf("echo of line %d is %q", i, got)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.echoed++
	s.lastEcho = time.Now()
	s.longestWait = max(s.longestWait, s.lastEcho.Sub(start))
	return nil
}

// Echoed is the number of lines echoed so far, and when the last was.
func (s *Stream) Echoed() (int, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.echoed, s.lastEcho
}

// Err is why the stream broke, or nil while it works.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Stop ends the exchange (an exchange in flight finishes first, or times
// out) and closes the connection.
func (s *Stream) Stop() StreamResult {
	s.once.Do(func() { close(s.quit) })
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.err
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return StreamResult{Echoed: s.echoed, LongestWait: s.longestWait, Err: err}
}
