package dhcp6_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/nclient6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/tapbridge/tapbridge-cni/internal/dhcp6"
)

// wire is the guest's port as nclient6 sees it: what the client writes
// goes through Handle, what Handle answers is what the client reads. It
// stands in for the agent's socket and framing only.
type wire struct {
	s       dhcp6.Server
	g       dhcp6.Guest
	replies chan []byte
	once    sync.Once
	mu      sync.Mutex
	refused []dhcp6.Refusal
}

func newWire(s dhcp6.Server, g dhcp6.Guest) *wire {
	return &wire{s: s, g: g, replies: make(chan []byte, 8)}
}

func (w *wire) WriteTo(b []byte, _ net.Addr) (int, error) {
	out, r := w.s.Handle(w.g, b)
	w.mu.Lock()
	w.refused = append(w.refused, r)
	w.mu.Unlock()
	if out != nil {
		w.replies <- out
	}
	return len(b), nil
}

func (w *wire) ReadFrom(b []byte) (int, net.Addr, error) {
	out, ok := <-w.replies
	if !ok {
		return 0, nil, net.ErrClosed
	}
	return copy(b, out), &net.UDPAddr{IP: net.ParseIP("fe80::1"), Port: dhcpv6.DefaultServerPort}, nil
}

func (w *wire) Close() error                     { w.once.Do(func() { close(w.replies) }); return nil }
func (w *wire) LocalAddr() net.Addr              { return &net.UDPAddr{Port: dhcpv6.DefaultClientPort} }
func (w *wire) SetDeadline(time.Time) error      { return nil }
func (w *wire) SetReadDeadline(time.Time) error  { return nil }
func (w *wire) SetWriteDeadline(time.Time) error { return nil }
func (w *wire) refusals() []dhcp6.Refusal        { w.mu.Lock(); defer w.mu.Unlock(); return w.refused }

// The library's own client state machine gets the guest's address: Solicit,
// Advertise, Request, Reply, then Renew and Release built from that Reply.
func TestClientRoundTrip(t *testing.T) {
	s, g := testServer(t), testGuest()
	w := newWire(s, g)
	c, err := nclient6.NewWithConn(w, guestMAC, nclient6.WithTimeout(2*time.Second), nclient6.WithRetry(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	adv, err := c.Solicit(ctx)
	if err != nil {
		t.Fatalf("solicit: %v", err)
	}
	checkLease(t, adv, iaidOf(guestMAC), g)
	rep, err := c.Request(ctx, adv)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if rep.MessageType != dhcpv6.MessageTypeReply {
		t.Fatalf("request answered with %s", rep.MessageType)
	}
	checkLease(t, rep, iaidOf(guestMAC), g)
	checkConfig(t, rep)

	for _, typ := range []dhcpv6.MessageType{dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRelease} {
		m, err := dhcpv6.NewMessage(
			dhcpv6.WithOption(rep.GetOneOption(dhcpv6.OptionClientID)),
			dhcpv6.WithOption(rep.GetOneOption(dhcpv6.OptionServerID)),
			dhcpv6.WithOption(rep.Options.OneIANA()))
		if err != nil {
			t.Fatal(err)
		}
		m.MessageType = typ
		got, err := c.SendAndRead(ctx, nclient6.AllDHCPRelayAgentsAndServers, m, nclient6.IsMessageType(dhcpv6.MessageTypeReply))
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if typ == dhcpv6.MessageTypeRenew {
			checkLease(t, got, iaidOf(guestMAC), g)
		} else {
			checkStatus(t, got, iana.StatusSuccess)
		}
	}
	for i, r := range w.refusals() {
		if r != dhcp6.None {
			t.Errorf("message %d refused: %s", i, r)
		}
	}
}

func TestClientRapidCommit(t *testing.T) {
	s, g := testServer(t), testGuest()
	c, err := nclient6.NewWithConn(newWire(s, g), guestMAC, nclient6.WithTimeout(2*time.Second), nclient6.WithRetry(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rep, err := c.RapidSolicit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.MessageType != dhcpv6.MessageTypeReply || rep.GetOneOption(dhcpv6.OptionRapidCommit) == nil {
		t.Fatalf("rapid solicit answered with %s", rep.Summary())
	}
	checkLease(t, rep, iaidOf(guestMAC), g)
}

// A client whose DUID is another NIC's MAC (a guest with two served NICs
// uses one DUID for both) still gets the guest's address.
func TestClientWithAnotherNICsDUID(t *testing.T) {
	s, g := testServer(t), testGuest()
	w := newWire(s, g)
	other := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 9}
	c, err := nclient6.NewWithConn(w, other, nclient6.WithTimeout(time.Second), nclient6.WithRetry(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	adv, err := c.Solicit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkLease(t, adv, iaidOf(other), g)
}

// iaidOf is the IAID dhcpv6.NewSolicit derives from a MAC.
func iaidOf(mac net.HardwareAddr) (id [4]byte) {
	copy(id[:], mac[len(mac)-4:])
	return id
}
