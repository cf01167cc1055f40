package agent

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/internal/dhcp4"
	"github.com/tapbridge/tapbridge-cni/internal/dhcp6"
	"github.com/tapbridge/tapbridge-cni/internal/frame"
	"github.com/tapbridge/tapbridge-cni/internal/ra"
	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// reannounceEvery is how often the unsolicited advertisement is repeated:
// half of ra.MaxInterval, so a guest that missed one (or rebooted without
// soliciting) learns its on-link prefix and the M/O flags soon, and the
// prefix's lifetime survives many lost advertisements.
const reannounceEvery = ra.MaxInterval / 2

// maxFrame bounds what a port reads of one frame. A DHCP request is a few
// hundred bytes (clients must accept 576-byte messages, RFC 2131); larger
// frames are refused as oversized without being parsed.
const maxFrame = 4096

// port serves one attachment: its socket on the host end of the veth, its
// rate limit and its protocol services. Its reader goroutine is the only
// one to touch bucket and services.
type port struct {
	key      string
	rec      state.Record
	ifindex  int // the host port's device, which the socket is bound to
	labels   portLabels
	guest    net.HardwareAddr
	sock     *socket
	bucket   *bucket
	services map[string]service
	m        *metrics
	log      *slog.Logger
	done     chan struct{} // closed when the reader has returned
	// dropped is the sum of the kernel's drops on the socket: the kernel
	// resets its count at each read (see socket.drops).
	dropped atomic.Uint64

	mu      sync.Mutex
	timer   *time.Timer // the next unsolicited announcement; guarded by mu
	stopped bool        // guarded by mu
}

// startPort starts reading rec's port: everything it needs is looked up
// first, then the socket opens and the reader starts. A served guest gets
// its services; a learning port's link-local claims go to lls.
func startPort(key string, rec state.Record, m *metrics, log *slog.Logger, lls *linkLocals) (*port, error) {
	guest, err := net.ParseMAC(rec.MAC)
	if err != nil {
		return nil, fmt.Errorf("guest MAC %q: %w", rec.MAC, err)
	}
	p := &port{
		key: key, rec: rec, guest: guest, m: m,
		labels:   portLabels{port: rec.HostIf, namespace: rec.Pod.Namespace, pod: rec.Pod.Name},
		bucket:   newBucket(time.Now()),
		services: map[string]service{},
		log:      log.With("attachment", key, "port", rec.HostIf, "namespace", rec.Pod.Namespace, "pod", rec.Pod.Name),
		done:     make(chan struct{}),
	}
	hostIf, err := netlink.LinkByName(rec.HostIf)
	if err != nil {
		return nil, fmt.Errorf("find port %s: %w", rec.HostIf, err)
	}
	kinds := filterKinds{serve: serves(rec), learn: rec.LearnLinkLocal}
	if kinds.serve {
		// One family's failure (no server identifier for a /32, say)
		// does not take the others, or learning, with it.
		if err := p.addServices(rec, guest); err != nil {
			p.log.Error("not every service of the port could start", "err", err)
		}
	}
	if kinds.learn {
		p.services[protoLinkLocal] = &learnService{key: key, port: rec.HostIf, bridge: rec.Bridge, lls: lls, m: m, log: p.log}
	}
	if len(p.services) == 0 {
		return nil, fmt.Errorf("port %s: no service could start", rec.HostIf)
	}
	p.ifindex = hostIf.Attrs().Index
	if p.sock, err = openSocket(p.ifindex, kinds); err != nil {
		return nil, fmt.Errorf("port %s: %w", rec.HostIf, err)
	}
	go p.run()
	p.announce()
	return p, nil
}

// addServices makes the handlers of each family the guest has an
// address of. The node's side of the guest's L2 is the bridge: its MAC is
// the source of every reply, its addresses the candidates for the
// server's address.
func (p *port) addServices(rec state.Record, guest net.HardwareAddr) error {
	br, err := netlink.LinkByName(rec.Bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", rec.Bridge, err)
	}
	addrs, err := netlink.AddrList(br, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of bridge %s: %w", rec.Bridge, err)
	}
	var nets []*net.IPNet
	for _, a := range addrs {
		nets = append(nets, a.IPNet)
	}
	mac, hostAddrs := br.Attrs().HardwareAddr, prefixes(nets)
	return errors.Join(p.addDHCP4(rec, guest, mac, hostAddrs), p.addIPv6(rec, guest, mac, hostAddrs))
}

// ifindexOf is the index of the named device now, 0 if there is none.
func ifindexOf(name string) int {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return 0
	}
	return l.Attrs().Index
}

func (p *port) addDHCP4(rec state.Record, guest, src net.HardwareAddr, hostAddrs []netip.Prefix) error {
	g, ok := dhcp4Guest(rec, guest)
	if !ok {
		return nil
	}
	id, ok := dhcp4.ChooseServerID(g, hostAddrs)
	if !ok {
		return fmt.Errorf("no server identifier for %s: its subnet has no other address", g.Addr)
	}
	h, err := dhcp4.NewHandler(g, id)
	if err != nil {
		return err
	}
	p.services[protoDHCP4] = &dhcp4Service{h: h, src: src, log: p.log}
	return nil
}

// dhcp6Server is the network's DHCPv6 server identity, the same on every
// node (see dhcp6.NewNetworkServer); a record without a network name (a
// version-1 record, written before names were kept) gets the port's own.
func dhcp6Server(rec state.Record, src net.HardwareAddr) (dhcp6.Server, error) {
	if rec.Network == "" {
		return dhcp6.NewServer(src)
	}
	return dhcp6.NewNetworkServer(rec.Network)
}

// addIPv6 serves DHCPv6 and router advertisements, from the node's
// link-local address on the bridge.
func (p *port) addIPv6(rec state.Record, guest, src net.HardwareAddr, hostAddrs []netip.Prefix) error {
	ip, ok := ipv6Of(rec)
	if !ok {
		return nil
	}
	srcIP := linkLocal(hostAddrs, src)
	srv, err := dhcp6Server(rec, src)
	if err != nil {
		return err
	}
	p.services[protoDHCP6] = &dhcp6Service{srv: srv, guest: dhcp6Guest(rec, guest, ip), src: src, srcIP: srcIP}
	adv, err := newRAService(raParams(rec, ip, src), srcIP)
	if err != nil {
		return err
	}
	p.services[protoRA] = adv
	return nil
}

// announce sends what the services send unasked when serving starts,
// and again every reannounceEvery until the port stops.
func (p *port) announce() {
	announced := false
	for proto, s := range p.services {
		if st, ok := s.(starter); ok {
			p.send(proto, st.start())
			announced = true
		}
	}
	if !announced {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stopped {
		p.timer = time.AfterFunc(reannounceEvery, p.announce)
	}
}

// stop closes the socket and waits for the reader. An announcement under
// way may still try the closed socket: that send fails and is logged.
func (p *port) stop() {
	p.mu.Lock()
	p.stopped = true
	if p.timer != nil {
		p.timer.Stop()
	}
	p.mu.Unlock()
	n, err := p.sock.close()
	p.dropped.Add(n)
	if err != nil {
		p.log.Warn("close port", "err", err)
	}
	<-p.done
}

// countDrops adds what the kernel dropped since the last read to the
// port's sum and returns the sum. A stopped port keeps the sum its last
// read (in stop) left.
func (p *port) countDrops() uint64 {
	n, err := p.sock.drops()
	if err != nil && !errors.Is(err, os.ErrClosed) {
		p.log.Warn("read dropped frames", "err", err)
	}
	return p.dropped.Add(n)
}

func (p *port) run() {
	defer close(p.done)
	buf := make([]byte, maxFrame)
	for {
		n, err := p.sock.read(buf)
		if errors.Is(err, os.ErrClosed) {
			return
		}
		if err != nil {
			// ENETDOWN once when the port goes; nothing else is expected.
			p.log.Debug("read port", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.handle(buf[:min(n, len(buf))], n > len(buf))
	}
}

// handle serves one frame. Every frame is charged to the port's budget
// before anything else is done with it, so a flood costs the agent the
// same whatever it carries.
func (p *port) handle(b []byte, oversized bool) {
	pkt, err := frame.Parse(b)
	proto := protocolOf(pkt, err)
	if !p.bucket.take(time.Now()) {
		p.m.refused(proto, refusedRateLimited)
		return
	}
	switch {
	case oversized:
		p.m.refused(protoFrame, refusedOversized)
		return
	case proto == protoFrame:
		p.m.refused(protoFrame, refusedMalformed)
		return
	case !bytes.Equal(pkt.Src, p.guest):
		p.m.refused(proto, refusedForeignMAC)
		p.log.Debug("request from a foreign MAC", "protocol", proto, "src", pkt.Src.String())
		return
	}
	s := p.services[proto]
	if s == nil {
		p.m.refused(proto, refusedUnserved)
		return
	}
	out := s.handle(pkt)
	p.m.requests.WithLabelValues(proto, out.request).Inc()
	if out.refusal != "" {
		p.m.refused(proto, out.refusal)
		p.log.Debug("request refused", "protocol", proto, "type", out.request, "reason", out.refusal)
	}
	p.send(proto, out.replies)
}

func (p *port) send(proto string, replies []reply) {
	for _, r := range replies {
		if err := p.sock.write(r.frame); err != nil {
			p.log.Warn("send reply", "protocol", proto, "type", r.kind, "err", err)
			continue
		}
		p.m.replies.WithLabelValues(proto, r.kind).Inc()
		p.log.Debug("reply sent", "protocol", proto, "type", r.kind)
	}
}

// protocolOf tells which service a frame the filter passed is for;
// protoFrame when it could not be parsed.
func protocolOf(p frame.Packet, err error) string {
	switch {
	case err != nil:
		return protoFrame
	case p.Proto == frame.ProtoUDP && p.IPDst.Is4() && p.DstPort == dhcp4.ServerPort:
		return protoDHCP4
	case p.Proto == frame.ProtoUDP && p.IPDst.Is6() && p.DstPort == dhcp6ServerPort:
		return protoDHCP6
	case p.Proto == frame.ProtoICMPv6 && p.Payload[0] == 133:
		return protoRA
	case p.Proto == frame.ProtoICMPv6 && p.Payload[0] == icmpv6NeighborSolicit:
		return protoLinkLocal
	}
	return protoFrame
}
