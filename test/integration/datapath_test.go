package integration

import (
	"bytes"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// E1: real frames both ways between the TAP (opened as uid 107 with
// QEMU's flags) and a peer on the bridge, through the peer's own kernel:
// its ARP request reaches the TAP, our ARP reply teaches it the guest's
// MAC, its UDP datagram reaches the TAP, and our datagram reaches its
// socket.
func TestDataPath(t *testing.T) {
	f := newFixture(t)
	pod := f.pod()
	r := f.runtime(f.conf("1.1.0"))
	rt := rtConf("cid-e1", pod, "pod0e1e1e1e1e1")
	res, err := r.add(rt)
	if err != nil {
		t.Fatal(err)
	}
	defer r.del(rt)
	guestMAC, _ := net.ParseMAC(res.Interfaces[2].Mac)
	guestIP := res.IPs[0].Address.IP.To4()
	peerIP := net.IPv4(10, 77, 0, 5).To4()
	peerMAC := f.peerAddr(peerIP)

	fds, err := guest.OpenTap(pod.Path(), res.Interfaces[1].Name, 1, 107, 107)
	if err != nil {
		t.Fatalf("open the TAP as uid 107: %v", err)
	}
	tapFd := fds[0]
	defer tapFd.Close()

	conn := f.peerUDP(t, peerIP)
	defer conn.Close()
	f.sendFromPeer(t, guestIP, []byte("to-guest-1")) // makes the peer ARP for the guest
	arpReq := readFrame(t, tapFd, func(fr []byte) bool { return isARPFor(fr, guestIP) })
	if !bytes.Equal(arpReq[6:12], peerMAC) {
		t.Fatalf("ARP request from %x, want the peer %s", arpReq[6:12], peerMAC)
	}
	writeFrame(t, tapFd, harness.ARPReply(guestMAC, guestIP, peerMAC, peerIP))
	f.sendFromPeer(t, guestIP, []byte("to-guest-2"))
	readFrame(t, tapFd, func(fr []byte) bool { return bytes.Contains(fr, []byte("to-guest-2")) })

	writeFrame(t, tapFd, harness.UDP4(guestMAC, peerMAC, guestIP, peerIP, 4000, 5000, []byte("from-guest")))
	buf := make([]byte, 64)
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, _, err := conn.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "from-guest" {
		t.Fatalf("peer socket: %q %v", buf[:n], err)
	}
}

// peerAddr puts ip on the peer's p0 and returns p0's MAC.
func (f *fixture) peerAddr(ip net.IP) net.HardwareAddr {
	f.t.Helper()
	var mac net.HardwareAddr
	err := f.node.Peer.Do(func() error {
		l, err := netlink.LinkByName("p0")
		if err != nil {
			return err
		}
		mac = l.Attrs().HardwareAddr
		return netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(24, 32)}})
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return mac
}

// peerUDP opens a UDP socket in the peer netns (the socket stays bound to
// that netns after the thread leaves it).
func (f *fixture) peerUDP(t *testing.T, ip net.IP) net.PacketConn {
	var conn net.PacketConn
	err := f.node.Peer.Do(func() error {
		var err error
		conn, err = net.ListenPacket("udp4", ip.String()+":5000")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func (f *fixture) sendFromPeer(t *testing.T, dst net.IP, payload []byte) {
	err := f.node.Peer.Do(func() error {
		c, err := net.Dial("udp4", net.JoinHostPort(dst.String(), strconv.Itoa(4000)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(payload)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func isARPFor(fr []byte, ip net.IP) bool {
	return len(fr) >= 42 && fr[12] == 0x08 && fr[13] == 0x06 && bytes.Equal(fr[38:42], ip)
}

// readFrame reads frames off the TAP (after the virtio-net header) until
// match accepts one, or fails after 5 s.
func readFrame(t *testing.T, tapFd *os.File, match func([]byte) bool) []byte {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 65536)
	for {
		if err := tapFd.SetReadDeadline(deadline); err != nil {
			t.Fatal(err)
		}
		n, err := tapFd.Read(buf)
		if err != nil {
			t.Fatalf("no matching frame on the TAP: %v", err)
		}
		if fr := buf[guest.VnetHdrLen:n]; match(fr) {
			return append([]byte(nil), fr...)
		}
	}
}

func writeFrame(t *testing.T, tapFd *os.File, fr []byte) {
	t.Helper()
	if _, err := tapFd.Write(append(make([]byte, guest.VnetHdrLen), fr...)); err != nil {
		t.Fatalf("write to the TAP: %v", err)
	}
}
