package agent

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/tapbridge/tapbridge-cni/internal/dhcp6"
	"github.com/tapbridge/tapbridge-cni/internal/frame"
	"github.com/tapbridge/tapbridge-cni/internal/ra"
	"github.com/tapbridge/tapbridge-cni/internal/state"
)

var (
	bridgeMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}
	guestMAC  = net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	guestLL   = netip.MustParseAddr("fe80::11:22ff:fe33:4455")
)

func TestLinkLocal(t *testing.T) {
	if got := linkLocal(nil, guestMAC); got != guestLL {
		t.Errorf("EUI-64 of %s: %s, want %s", guestMAC, got, guestLL)
	}
	own := netip.MustParsePrefix("fe80::1/64")
	if got := linkLocal([]netip.Prefix{netip.MustParsePrefix("fd00::1/64"), own}, guestMAC); got != own.Addr() {
		t.Errorf("the bridge's own link-local: %s", got)
	}
}

func testRecord() state.Record {
	return state.Record{
		MTU: 1400,
		IPs: []state.IP{
			{Address: netip.MustParsePrefix("10.1.0.7/24")},
			{Address: netip.MustParsePrefix("fd00:1::7/64"), Gateway: netip.MustParseAddr("fd00:1::1")},
		},
		DNS:  state.DNS{Nameservers: []netip.Addr{netip.MustParseAddr("fd00:1::53")}},
		DHCP: &state.DHCP{LeaseTime: 600},
	}
}

func TestRAService(t *testing.T) {
	rec := testRecord()
	ip, _ := ipv6Of(rec)
	src := linkLocal(nil, bridgeMAC)
	s, err := newRAService(raParams(rec, ip, bridgeMAC), src)
	if err != nil {
		t.Fatal(err)
	}
	h := frame.Header{Src: guestMAC, Dst: net.HardwareAddr{0x33, 0x33, 0, 0, 0, 2}, IPSrc: guestLL, IPDst: netip.MustParseAddr("ff02::2")}
	rs := []byte{133, 0, 0, 0, 0, 0, 0, 0}
	p, err := frame.Parse(frame.ICMPv6(h, ndHopLimit, rs))
	if err != nil {
		t.Fatal(err)
	}
	o := s.handle(p)
	if o.request != "rs" || o.refusal != "" || len(o.replies) != 1 || o.replies[0].kind != "ra" {
		t.Fatalf("%+v", o)
	}
	adv, err := frame.Parse(o.replies[0].frame)
	if err != nil {
		t.Fatal(err)
	}
	if adv.IPSrc != src || adv.IPDst != allNodes || adv.HopLimit != ndHopLimit || adv.Payload[0] != 134 ||
		!ra.ValidChecksum(adv.IPSrc, adv.IPDst, adv.Payload) || adv.Dst.String() != allNodesMAC.String() {
		t.Errorf("advertisement %+v", adv)
	}
	// RFC 4861 6.1.1: a solicitation that may have been routed, whose
	// checksum is wrong, or from :: with a source link-layer option, is
	// dropped.
	routed, _ := frame.Parse(frame.ICMPv6(h, 64, rs))
	bad := frame.ICMPv6(h, ndHopLimit, rs)
	bad[len(bad)-1] ^= 1
	corrupt, _ := frame.Parse(bad)
	unspec := h
	unspec.IPSrc = netip.IPv6Unspecified()
	fromUnspecWithSLLA, _ := frame.Parse(frame.ICMPv6(unspec, ndHopLimit, append(append([]byte{}, rs...), 1, 1, 2, 0, 0, 0, 0, 1)))
	for name, p := range map[string]frame.Packet{"hop limit 64": routed, "bad checksum": corrupt, "from :: with a source link-layer option": fromUnspecWithSLLA} {
		if o := s.handle(p); o.refusal != ra.Malformed.String() || len(o.replies) != 0 {
			t.Errorf("%s: %+v", name, o)
		}
	}
}

func TestDHCP6Service(t *testing.T) {
	rec := testRecord()
	ip, _ := ipv6Of(rec)
	srv, err := dhcp6.NewServer(bridgeMAC)
	if err != nil {
		t.Fatal(err)
	}
	src := linkLocal(nil, bridgeMAC)
	s := &dhcp6Service{srv: srv, guest: dhcp6Guest(rec, guestMAC, ip), src: bridgeMAC, srcIP: src}
	sol, err := dhcpv6.NewSolicit(guestMAC)
	if err != nil {
		t.Fatal(err)
	}
	h := frame.Header{Src: guestMAC, Dst: net.HardwareAddr{0x33, 0x33, 0, 1, 0, 2}, IPSrc: guestLL, IPDst: netip.MustParseAddr("ff02::1:2")}
	p, err := frame.Parse(frame.UDP6(h, 1, 546, 547, sol.ToBytes()))
	if err != nil {
		t.Fatal(err)
	}
	o := s.handle(p)
	if o.request != "solicit" || o.refusal != "" || len(o.replies) != 1 || o.replies[0].kind != "advertise" {
		t.Fatalf("%+v", o)
	}
	r, err := frame.Parse(o.replies[0].frame)
	if err != nil {
		t.Fatal(err)
	}
	if r.IPSrc != src || r.IPDst != guestLL || r.Dst.String() != guestMAC.String() || r.SrcPort != 547 || r.DstPort != 546 {
		t.Errorf("advertise framed as %+v", r)
	}
	m, err := dhcpv6.FromBytes(r.Payload)
	if err != nil {
		t.Fatal(err)
	}
	msg := m.(*dhcpv6.Message)
	if ia := msg.Options.OneIANA(); ia == nil || ia.Options.OneAddress() == nil || !ia.Options.OneAddress().IPv6Addr.Equal(net.ParseIP("fd00:1::7")) {
		t.Errorf("advertise without the guest's address: %s", msg.Summary())
	}
}

func TestBucket(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newBucket(now)
	for i := 0; i < burst; i++ {
		if !b.take(now) {
			t.Fatalf("burst spent after %d", i)
		}
	}
	if b.take(now) {
		t.Fatal("a token beyond the burst")
	}
	if !b.take(now.Add(time.Second / refillRate)) {
		t.Fatal("no token after one refill interval")
	}
	if b.take(now.Add(time.Second / refillRate)) {
		t.Fatal("two tokens from one refill interval")
	}
}
