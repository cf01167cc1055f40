package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// vnetHdrLen is sizeof(struct virtio_net_hdr), which prefixes every frame
// on a TAP opened with IFF_VNET_HDR (the default TUNSETVNETHDRSZ).
const vnetHdrLen = 10

// Offsets in a buffer as read from or written to the TAP.
const (
	offEth     = vnetHdrLen
	offIP      = offEth + 14
	offUDP     = offIP + 20
	offPayload = offUDP + 8 // nonce(4) seq(4) timestamp(8)
)

// endpoint is one "guest": a TAP fd and the addresses its frames carry.
type endpoint struct {
	fd  int
	mac net.HardwareAddr
	ip  netip.Addr
}

// openTap attaches to (or creates) a TAP in the calling thread's netns,
// as QEMU does: IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, non-blocking.
func openTap(name string) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	return fd, nil
}

// frame builds a zero virtio header and an Ethernet/IPv4/UDP frame of
// ethLen bytes (without FCS) from src to dst: a frame the anti-spoof rules
// let through, since it is what a real guest sends.
func frame(ethLen int, src, dst endpoint, nonce uint32) []byte {
	b := make([]byte, vnetHdrLen+ethLen)
	copy(b[offEth:], dst.mac)
	copy(b[offEth+6:], src.mac)
	binary.BigEndian.PutUint16(b[offEth+12:], unix.ETH_P_IP)
	ip := b[offIP:offUDP]
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(ethLen-14))
	s, d := src.ip.As4(), dst.ip.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	udp := b[offUDP:offPayload]
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 40001)
	binary.BigEndian.PutUint16(udp[4:], uint16(ethLen-34))
	binary.BigEndian.PutUint32(b[offPayload:], nonce)
	return b
}

func checksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// ours reports whether a buffer read from a TAP is one of this phase's
// frames (bridges and kernels add their own multicast now and then).
func ours(b []byte, nonce uint32) bool {
	return len(b) >= offPayload+16 && binary.BigEndian.Uint16(b[offEth+12:]) == unix.ETH_P_IP &&
		binary.BigEndian.Uint32(b[offPayload:]) == nonce
}

// receiver reads one TAP on a locked thread until stopped, calling got
// for each frame of the phase. The fd is non-blocking; poll waits briefly
// so a stop is noticed.
type receiver struct {
	fd    int
	nonce uint32
	got   func(b []byte, at time.Time)
	stop  atomic.Bool
	count atomic.Uint64
}

func (r *receiver) run() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, 65536)
	pfd := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Read(r.fd, buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			if r.stop.Load() {
				return nil
			}
			if _, err := unix.Poll(pfd, 20); err != nil && !errors.Is(err, unix.EINTR) {
				return fmt.Errorf("poll tap: %w", err)
			}
			continue
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("read tap: %w", err)
		}
		if ours(buf[:n], r.nonce) {
			r.count.Add(1)
			if r.got != nil {
				r.got(buf[:n], time.Now())
			}
		}
	}
}

// drain discards whatever is queued on a TAP.
func drain(fd int) {
	buf := make([]byte, 65536)
	for {
		if _, err := unix.Read(fd, buf); err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// blast writes the frame as fast as one thread can for d and returns the
// frames the kernel accepted, the time it took and the CPU time of the
// writing thread, which includes the whole forwarding path: a TAP write
// queues the frame to the backlog and runs the softirq on the way out.
func blast(fd int, f []byte, d time.Duration) (sent uint64, took, cpu time.Duration, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	defer func() { cpu = threadCPU() - cpu0 }()
	t0 := time.Now()
	deadline := t0.Add(d)
	for i := 0; ; i++ {
		if i&31 == 0 && time.Now().After(deadline) {
			break
		}
		_, err := unix.Write(fd, f)
		switch {
		case err == nil:
			sent++
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.ENOBUFS), errors.Is(err, unix.EINTR):
		default:
			return sent, time.Since(t0), 0, fmt.Errorf("write tap: %w", err)
		}
	}
	return sent, time.Since(t0), 0, nil
}

func threadCPU() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rate is one throughput measurement.
type rate struct {
	FPS       float64 // frames received per second of wall time
	PerCPU    float64 // frames received per second of the writer's CPU
	Delivered float64 // received / written
}

// throughput counts frames received at rx while tx blasts for d.
func throughput(tx, rx endpoint, ethLen int, d time.Duration, nonce uint32) (rate, error) {
	drain(rx.fd)
	r := &receiver{fd: rx.fd, nonce: nonce}
	done := goSafe(r.run)
	sent, took, cpu, werr := blast(tx.fd, frame(ethLen, tx, rx, nonce), d)
	time.Sleep(30 * time.Millisecond) // what is in flight still counts
	r.stop.Store(true)
	if err := errors.Join(werr, <-done); err != nil {
		return rate{}, err
	}
	got := float64(r.count.Load())
	return rate{FPS: got / took.Seconds(), PerCPU: got / max(cpu.Seconds(), 1e-9), Delivered: got / float64(max(sent, 1))}, nil
}

// latency sends n small frames paced apart, each stamped with the time it
// was written, and returns the one-way delays measured at rx.
func latency(tx, rx endpoint, n int, nonce uint32) ([]time.Duration, error) {
	drain(rx.fd)
	base := time.Now()
	lat := make([]time.Duration, 0, n)
	r := &receiver{fd: rx.fd, nonce: nonce, got: func(b []byte, at time.Time) {
		sent := time.Duration(binary.BigEndian.Uint64(b[offPayload+8:]))
		lat = append(lat, at.Sub(base)-sent)
	}}
	done := goSafe(r.run)
	f := frame(60, tx, rx, nonce)
	for i := range n {
		binary.BigEndian.PutUint32(f[offPayload+4:], uint32(i))
		binary.BigEndian.PutUint64(f[offPayload+8:], uint64(time.Since(base)))
		if _, err := unix.Write(tx.fd, f); err != nil && !errors.Is(err, unix.EAGAIN) {
			r.stop.Store(true)
			return nil, errors.Join(fmt.Errorf("write tap: %w", err), <-done)
		}
		time.Sleep(150 * time.Microsecond)
	}
	time.Sleep(30 * time.Millisecond)
	r.stop.Store(true)
	if err := <-done; err != nil {
		return nil, err
	}
	if len(lat) < n/2 {
		return lat, fmt.Errorf("latency: %d of %d paced frames arrived", len(lat), n)
	}
	return lat, nil
}
