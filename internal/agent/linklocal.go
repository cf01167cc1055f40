package agent

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/tapbridge/tapbridge-cni/internal/frame"
	"github.com/tapbridge/tapbridge-cni/internal/ra"
	"github.com/tapbridge/tapbridge-cni/internal/spoof"
)

// icmpv6NeighborSolicit is the ICMPv6 type of a neighbour solicitation.
const icmpv6NeighborSolicit = 135

// linkLocals knows which attachment on the node holds which IPv6
// link-local: the EUI-64 one of every attachment's MAC (from the
// records), and the one each learning port's set holds (read from the
// port's table when the agent starts watching it: the table is the
// state, this is an index of it). A claim is checked and learned under
// its lock, so two guests claiming one address cannot both get it, and a
// check costs the same whatever the number of attachments.
type linkLocals struct {
	mu      sync.Mutex
	eui     map[string]netip.Addr              // attachment key -> EUI-64 link-local of its MAC
	learned map[string]netip.Addr              // attachment key -> the link-local its port learned
	holders map[netip.Addr]map[string]struct{} // the keys holding each address, either way
}

func newLinkLocals() *linkLocals {
	return &linkLocals{eui: map[string]netip.Addr{}, learned: map[string]netip.Addr{},
		holders: map[netip.Addr]map[string]struct{}{}}
}

// setEUI records the EUI-64 link-local of an attachment's guest MAC.
func (l *linkLocals) setEUI(key string, mac net.HardwareAddr) {
	if len(mac) != 6 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.put(l.eui, key, eui64(mac))
}

// load reads what the port's set holds; a port whose table has no set
// (not made yet, or going) holds nothing. It reads under the lock, so a
// claim learned meanwhile is never overwritten by an older read.
func (l *linkLocals) load(key, port string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	got, err := spoof.Learned(port)
	if errors.Is(err, spoof.ErrNoLearnedSet) {
		got, err = nil, nil
	}
	if err != nil {
		return err
	}
	if len(got) == 0 {
		l.del(l.learned, key)
		return nil
	}
	// Learn keeps one; should there be more, the first stands for them
	// all until the guest claims again.
	l.put(l.learned, key, got[0])
	return nil
}

// keep forgets every attachment not in keys.
func (l *linkLocals) keep(keys map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range []map[string]netip.Addr{l.eui, l.learned} {
		for key := range m {
			if !keys[key] {
				l.del(m, key)
			}
		}
	}
}

// forget drops an attachment whose record is gone.
func (l *linkLocals) forget(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.del(l.eui, key)
	l.del(l.learned, key)
}

// claimResult is what one DAD claim came to.
type claimResult int

const (
	claimLearned claimResult = iota // the port's set now holds it
	claimKnown                      // the guest's EUI-64 or already learned: nothing to do
	claimHeld                       // another attachment holds it: refused
)

// claim learns a for key's port with learn, unless another attachment
// holds it or key holds it already.
func (l *linkLocals) claim(key string, a netip.Addr, learn func() error) (claimResult, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.eui[key] == a || l.learned[key] == a {
		return claimKnown, nil
	}
	for other := range l.holders[a] {
		if other != key {
			return claimHeld, nil
		}
	}
	if err := learn(); err != nil {
		return 0, err
	}
	l.put(l.learned, key, a)
	return claimLearned, nil
}

// put and del keep holders in step with the two maps; l.mu is held.
func (l *linkLocals) put(m map[string]netip.Addr, key string, a netip.Addr) {
	l.del(m, key)
	m[key] = a
	if l.holders[a] == nil {
		l.holders[a] = map[string]struct{}{}
	}
	l.holders[a][key] = struct{}{}
}

func (l *linkLocals) del(m map[string]netip.Addr, key string) {
	a, ok := m[key]
	if !ok {
		return
	}
	delete(m, key)
	if l.eui[key] == a || l.learned[key] == a {
		return // key still holds a the other way
	}
	delete(l.holders[a], key)
	if len(l.holders[a]) == 0 {
		delete(l.holders, a)
	}
}

// eui64 is fe80::/64 with the modified EUI-64 interface identifier of mac
// (RFC 4291 appendix A), what a guest's port always lets through.
func eui64(mac net.HardwareAddr) netip.Addr {
	var b [16]byte
	b[0], b[1] = 0xfe, 0x80
	copy(b[8:11], mac[0:3])
	b[8] ^= 0x02
	b[11], b[12] = 0xff, 0xfe
	copy(b[13:16], mac[3:6])
	return netip.AddrFrom16(b)
}

// learnService learns the link-local a learning port's guest claims by
// DAD. The claim itself never reaches the L2: the port's chain drops a
// DAD for a link-local it does not know, after this socket read it.
type learnService struct {
	key    string
	port   string // the host end of the veth: names the table
	bridge string // whose own addresses no guest may claim
	lls    *linkLocals
	m      *metrics
	log    *slog.Logger
}

func (s *learnService) handle(p frame.Packet) outcome {
	o := outcome{request: "dad"}
	target, ok := dadTarget(p)
	if !ok {
		o.refusal = refusedMalformed
		return o
	}
	if s.nodeHolds(target) {
		o.refusal = refusedHeld
		s.log.Warn("guest claims a link-local of the node's", "protocol", protoLinkLocal, "address", target)
		return o
	}
	r, err := s.lls.claim(s.key, target, func() error { return spoof.Learn(s.port, target) })
	switch {
	case err != nil:
		o.refusal = refusedFailed
		s.log.Warn("learn link-local", "protocol", protoLinkLocal, "address", target, "err", err)
	case r == claimHeld:
		o.refusal = refusedHeld
		s.log.Warn("guest claims a link-local another attachment holds", "protocol", protoLinkLocal, "address", target)
	case r == claimLearned:
		s.m.learned.Inc()
		s.log.Info("learned link-local", "protocol", protoLinkLocal, "address", target)
	}
	return o
}

// nodeHolds reports whether the bridge has a among its own addresses
// (the node's link-local on the L2, above all).
func (s *learnService) nodeHolds(a netip.Addr) bool {
	br, err := netlink.LinkByName(s.bridge)
	if err != nil {
		return false
	}
	addrs, err := netlink.AddrList(br, netlink.FAMILY_V6)
	if err != nil {
		return false
	}
	for _, x := range addrs {
		if b, ok := netip.AddrFromSlice(x.IP); ok && b == a {
			return true
		}
	}
	return false
}

// dadTarget checks what RFC 4861 7.1.1 and 4862 5.4.2 ask of a DAD
// neighbour solicitation (hop limit 255, source ::, to the target's
// solicited-node group, code 0, a good checksum, no source link-layer
// option) and returns its target if that is a learnable link-local.
func dadTarget(p frame.Packet) (netip.Addr, bool) {
	m := p.Payload
	if p.Proto != frame.ProtoICMPv6 || len(m) < 24 || m[0] != icmpv6NeighborSolicit || m[1] != 0 ||
		p.HopLimit != ndHopLimit || !p.IPSrc.IsUnspecified() || !ra.ValidChecksum(p.IPSrc, p.IPDst, m) {
		return netip.Addr{}, false
	}
	target := netip.AddrFrom16([16]byte(m[8:24]))
	if !spoof.IsLearnable(target) || p.IPDst != solicitedNode(target) || !optionsFromUnspecified(m[24:]) {
		return netip.Addr{}, false
	}
	return target, true
}

// solicitedNode is ff02::1:ffXX:XXXX for a's last 24 bits (RFC 4291 2.7.1).
func solicitedNode(a netip.Addr) netip.Addr {
	b := a.As16()
	g := [16]byte{0xff, 0x02, 11: 0x01, 12: 0xff}
	copy(g[13:], b[13:])
	return netip.AddrFrom16(g)
}

// optionsFromUnspecified: every option has a length that fits (RFC 4861
// 4.6: type, length in units of 8 bytes, data), and none is a source
// link-layer address, which a message from :: must not carry (a neighbour
// solicitation, 7.1.1; a router solicitation, 6.1.1).
func optionsFromUnspecified(opts []byte) bool {
	for len(opts) > 0 {
		if len(opts) < 2 {
			return false
		}
		n := int(opts[1]) * 8
		if opts[0] == 1 || n == 0 || n > len(opts) {
			return false
		}
		opts = opts[n:]
	}
	return true
}
