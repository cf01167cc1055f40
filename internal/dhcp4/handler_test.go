package dhcp4

import (
	"bytes"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/rfc1035label"
)

var (
	guestMAC = net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	otherMAC = net.HardwareAddr{0x02, 0x99, 0x99, 0x99, 0x99, 0x99}
	serverID = netip.MustParseAddr("10.1.0.250")
	bcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	bcastIP  = netip.MustParseAddr("255.255.255.255")
)

func testGuest() Guest {
	return Guest{
		MAC:     guestMAC,
		Addr:    netip.MustParsePrefix("10.1.0.7/24"),
		Gateway: netip.MustParseAddr("10.1.0.1"),
		Routes: []Route{
			{Dst: netip.MustParsePrefix("192.168.50.0/24"), GW: netip.MustParseAddr("10.1.0.9")},
			{Dst: netip.MustParsePrefix("172.20.0.0/16")}, // via the gateway
		},
		DNS:    []netip.Addr{netip.MustParseAddr("10.1.0.53"), netip.MustParseAddr("fd00::53")},
		Domain: "vm.example",
		Search: []string{"vm.example", "example"},
		MTU:    1450,
		Lease:  2 * time.Hour,
	}
}

func handler(t *testing.T, g Guest) *Handler {
	t.Helper()
	h, err := NewHandler(g, serverID)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func msg(t *testing.T, typ dhcpv4.MessageType, mods ...dhcpv4.Modifier) []byte {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(guestMAC),
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{1, 2, 3, 4}),
	}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m.ToBytes()
}

func decode(t *testing.T, r *Reply) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.FromBytes(r.Payload)
	if err != nil {
		t.Fatalf("reply does not decode: %v", err)
	}
	if m.OpCode != dhcpv4.OpcodeBootReply || m.TransactionID != (dhcpv4.TransactionID{1, 2, 3, 4}) || !bytes.Equal(m.ClientHWAddr, guestMAC) {
		t.Errorf("reply header: op %v xid %v chaddr %v", m.OpCode, m.TransactionID, m.ClientHWAddr)
	}
	return m
}

// wantOptions is every option an OFFER or ACK to testGuest carries, exactly.
func wantOptions(t dhcpv4.MessageType) dhcpv4.Options {
	search := &rfc1035label.Labels{Labels: []string{"vm.example", "example"}}
	return dhcpv4.OptionsFromList(
		dhcpv4.OptMessageType(t),
		dhcpv4.OptServerIdentifier(net.ParseIP("10.1.0.250")),
		dhcpv4.OptSubnetMask(net.CIDRMask(24, 32)),
		dhcpv4.OptRouter(net.ParseIP("10.1.0.1").To4()),
		dhcpv4.OptDNS(net.ParseIP("10.1.0.53").To4()),
		dhcpv4.OptDomainName("vm.example"),
		dhcpv4.Option{Code: dhcpv4.OptionInterfaceMTU, Value: dhcpv4.Uint16(1450)},
		dhcpv4.OptDomainSearch(search),
		dhcpv4.OptClasslessStaticRoute(
			&dhcpv4.Route{Dest: mustNet("192.168.50.0/24"), Router: net.ParseIP("10.1.0.9").To4()},
			&dhcpv4.Route{Dest: mustNet("172.20.0.0/16"), Router: net.ParseIP("10.1.0.1").To4()},
			&dhcpv4.Route{Dest: mustNet("0.0.0.0/0"), Router: net.ParseIP("10.1.0.1").To4()},
		),
		dhcpv4.OptIPAddressLeaseTime(2*time.Hour),
		dhcpv4.OptRenewTimeValue(time.Hour),
		dhcpv4.OptRebindingTimeValue(105*time.Minute),
	)
}

func mustNet(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = n.IP.To4()
	return n
}

func sameOptions(t *testing.T, got, want dhcpv4.Options) {
	t.Helper()
	if !reflect.DeepEqual(map[uint8][]byte(got), map[uint8][]byte(want)) {
		t.Errorf("options:\n got %v\nwant %v", got, want)
	}
}

func TestDiscoverOffer(t *testing.T) {
	h := handler(t, testGuest())
	for _, c := range []struct {
		name      string
		broadcast bool
		dst       netip.Addr
	}{
		{"unicast", false, netip.MustParseAddr("10.1.0.7")},
		{"broadcast flag", true, bcastIP},
	} {
		r := h.Handle(msg(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithBroadcast(c.broadcast)))
		if r.Request != "discover" || r.Refusal != None || r.Reply == nil || r.Reply.Type != "offer" {
			t.Fatalf("%s: %+v", c.name, r)
		}
		if r.Reply.IPDst != c.dst || !bytes.Equal(r.Reply.Dst, guestMAC) {
			t.Errorf("%s: sent to %s at %s, want %s at %s", c.name, r.Reply.IPDst, r.Reply.Dst, c.dst, guestMAC)
		}
		m := decode(t, r.Reply)
		if !m.YourIPAddr.Equal(net.ParseIP("10.1.0.7")) || !m.ClientIPAddr.IsUnspecified() || m.IsBroadcast() != c.broadcast {
			t.Errorf("%s: yiaddr %s ciaddr %s broadcast %v", c.name, m.YourIPAddr, m.ClientIPAddr, m.IsBroadcast())
		}
		sameOptions(t, m.Options, wantOptions(dhcpv4.MessageTypeOffer))
	}
}

func TestRequestStates(t *testing.T) {
	h := handler(t, testGuest())
	own, other := net.ParseIP("10.1.0.7").To4(), net.ParseIP("10.1.0.8").To4()
	for _, c := range []struct {
		name    string
		mods    []dhcpv4.Modifier
		reply   string
		refusal Refusal
		dst     netip.Addr
	}{
		{"selecting", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.1.0.250"))), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(own))},
			"ack", None, netip.MustParseAddr("10.1.0.7")},
		{"selecting another server", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.1.0.251"))), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(own))},
			"", NotForUs, netip.Addr{}},
		{"selecting another address", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.1.0.250"))), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(other))},
			"nak", ForeignAddress, bcastIP},
		{"selecting without address", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.1.0.250")))},
			"", Invalid, netip.Addr{}},
		{"init-reboot", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(own)), dhcpv4.WithBroadcast(true)},
			"ack", None, bcastIP},
		{"init-reboot elsewhere", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(other))},
			"nak", ForeignAddress, bcastIP},
		{"renewing", []dhcpv4.Modifier{dhcpv4.WithClientIP(own)},
			"ack", None, netip.MustParseAddr("10.1.0.7")},
		{"rebinding (broadcast)", []dhcpv4.Modifier{dhcpv4.WithClientIP(own), dhcpv4.WithBroadcast(true)},
			"ack", None, netip.MustParseAddr("10.1.0.7")},
		{"renewing another address", []dhcpv4.Modifier{dhcpv4.WithClientIP(other)},
			"nak", ForeignAddress, bcastIP},
		{"nothing to go by", nil, "", Invalid, netip.Addr{}},
	} {
		r := h.Handle(msg(t, dhcpv4.MessageTypeRequest, c.mods...))
		if r.Request != "request" || r.Refusal != c.refusal {
			t.Errorf("%s: request %q refusal %v, want %v", c.name, r.Request, r.Refusal, c.refusal)
		}
		if c.reply == "" {
			if r.Reply != nil {
				t.Errorf("%s: unexpected %s", c.name, r.Reply.Type)
			}
			continue
		}
		if r.Reply == nil || r.Reply.Type != c.reply || r.Reply.IPDst != c.dst {
			t.Errorf("%s: reply %+v, want %s to %s", c.name, r.Reply, c.reply, c.dst)
			continue
		}
		m := decode(t, r.Reply)
		if c.reply == "ack" {
			sameOptions(t, m.Options, wantOptions(dhcpv4.MessageTypeAck))
			if !m.YourIPAddr.Equal(own) {
				t.Errorf("%s: yiaddr %s", c.name, m.YourIPAddr)
			}
			continue
		}
		// A NAK says who refused and why, and nothing else.
		if !bytes.Equal(r.Reply.Dst, bcastMAC) || !m.YourIPAddr.IsUnspecified() {
			t.Errorf("%s: NAK to %s yiaddr %s", c.name, r.Reply.Dst, m.YourIPAddr)
		}
		sameOptions(t, m.Options, dhcpv4.OptionsFromList(
			dhcpv4.OptMessageType(dhcpv4.MessageTypeNak),
			dhcpv4.OptServerIdentifier(net.ParseIP("10.1.0.250")),
			dhcpv4.OptMessage("requested address is not this client's"),
		))
	}
}

func TestInform(t *testing.T) {
	h := handler(t, testGuest())
	r := h.Handle(msg(t, dhcpv4.MessageTypeInform, dhcpv4.WithClientIP(net.ParseIP("10.1.0.7"))))
	if r.Request != "inform" || r.Refusal != None || r.Reply == nil || r.Reply.Type != "ack" || r.Reply.IPDst != netip.MustParseAddr("10.1.0.7") {
		t.Fatalf("%+v", r)
	}
	m := decode(t, r.Reply)
	if !m.YourIPAddr.IsUnspecified() || !m.ClientIPAddr.Equal(net.ParseIP("10.1.0.7")) {
		t.Errorf("yiaddr %s ciaddr %s", m.YourIPAddr, m.ClientIPAddr)
	}
	want := wantOptions(dhcpv4.MessageTypeAck)
	for _, c := range []dhcpv4.OptionCode{dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue} {
		want.Del(c)
	}
	sameOptions(t, m.Options, want)

	for _, ciaddr := range []string{"0.0.0.0", "10.1.0.8"} {
		r := h.Handle(msg(t, dhcpv4.MessageTypeInform, dhcpv4.WithClientIP(net.ParseIP(ciaddr))))
		if r.Reply != nil || r.Refusal == None {
			t.Errorf("INFORM from %s: %+v", ciaddr, r)
		}
	}
}

func TestReleaseDecline(t *testing.T) {
	h := handler(t, testGuest())
	for typ, name := range map[dhcpv4.MessageType]string{dhcpv4.MessageTypeRelease: "release", dhcpv4.MessageTypeDecline: "decline"} {
		r := h.Handle(msg(t, typ, dhcpv4.WithClientIP(net.ParseIP("10.1.0.7"))))
		if r.Request != name || r.Reply != nil || r.Refusal != None {
			t.Errorf("%s: %+v", name, r)
		}
	}
}

func TestRefusals(t *testing.T) {
	h := handler(t, testGuest())
	valid := msg(t, dhcpv4.MessageTypeDiscover)
	for _, c := range []struct {
		name    string
		payload []byte
		want    Refusal
	}{
		{"empty", nil, Malformed},
		{"truncated", valid[:100], Malformed},
		{"bad cookie", append(append([]byte(nil), valid[:236]...), 1, 2, 3, 4), Malformed},
		{"reply opcode", msg(t, dhcpv4.MessageTypeDiscover, func(d *dhcpv4.DHCPv4) { d.OpCode = dhcpv4.OpcodeBootReply }), NotRequest},
		{"foreign chaddr", msg(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithHwAddr(otherMAC)), ForeignChaddr},
		{"foreign client id", msg(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithOption(dhcpv4.OptClientIdentifier(append([]byte{1}, otherMAC...)))), ForeignClientID},
		{"relayed", msg(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithRelay(net.ParseIP("10.1.0.99"))), Relayed},
		{"bootp", msg(t, dhcpv4.MessageTypeNone), UnsupportedType},
		{"offer from a guest", msg(t, dhcpv4.MessageTypeOffer), UnsupportedType},
	} {
		r := h.Handle(c.payload)
		if r.Refusal != c.want || r.Reply != nil {
			t.Errorf("%s: refusal %v reply %v, want %v and no reply", c.name, r.Refusal, r.Reply, c.want)
		}
	}
	// The guest's own MAC as client identifier, or a DUID, is fine.
	for _, id := range [][]byte{append([]byte{1}, guestMAC...), {0xff, 0, 0, 0, 1, 0, 2, 0, 1}} {
		if r := h.Handle(msg(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithOption(dhcpv4.OptClientIdentifier(id)))); r.Refusal != None {
			t.Errorf("client id %x refused: %v", id, r.Refusal)
		} else if got := decode(t, r.Reply).Options.Get(dhcpv4.OptionClientIdentifier); !bytes.Equal(got, id) {
			t.Errorf("client id %x echoed as %x", id, got)
		}
	}
	noAddr := handler(t, Guest{MAC: guestMAC})
	if r := noAddr.Handle(valid); r.Refusal != NoAddress || r.Reply != nil {
		t.Errorf("guest without IPv4: %+v", r)
	}
}

// TestMinimalGuest: no gateway means no router, no default route, and no
// option 121 unless IPAM gave routes; no DNS, domain or MTU, no options.
func TestMinimalGuest(t *testing.T) {
	g := Guest{MAC: guestMAC, Addr: netip.MustParsePrefix("10.1.0.7/16")}
	r := handler(t, g).Handle(msg(t, dhcpv4.MessageTypeDiscover))
	sameOptions(t, decode(t, r.Reply).Options, dhcpv4.OptionsFromList(
		dhcpv4.OptMessageType(dhcpv4.MessageTypeOffer),
		dhcpv4.OptServerIdentifier(net.ParseIP("10.1.0.250")),
		dhcpv4.OptSubnetMask(net.CIDRMask(16, 32)),
		dhcpv4.OptIPAddressLeaseTime(time.Hour),
		dhcpv4.OptRenewTimeValue(30*time.Minute),
		dhcpv4.OptRebindingTimeValue(52*time.Minute+30*time.Second),
	))
	g.Routes = []Route{{Dst: netip.MustParsePrefix("10.9.0.0/16")}}
	r = handler(t, g).Handle(msg(t, dhcpv4.MessageTypeDiscover))
	got := decode(t, r.Reply).ClasslessStaticRoute()
	if len(got) != 1 || got[0].Dest.String() != "10.9.0.0/16" || !got[0].Router.Equal(net.IPv4zero) {
		t.Errorf("on-link route without gateway: %v", got)
	}
}

func TestChooseServerID(t *testing.T) {
	g := testGuest()
	p := netip.MustParsePrefix
	for _, c := range []struct {
		name  string
		g     Guest
		hosts []netip.Prefix
		want  string
	}{
		{"host address in the subnet", g, []netip.Prefix{p("192.168.1.1/24"), p("10.1.0.250/24")}, "10.1.0.250"},
		{"no host address: the gateway", g, []netip.Prefix{p("192.168.1.1/24")}, "10.1.0.1"},
		{"neither: first address", Guest{Addr: p("10.1.0.7/24")}, nil, "10.1.0.1"},
		{"neither, guest first", Guest{Addr: p("10.1.0.1/24")}, nil, "10.1.0.2"},
		{"/31", Guest{Addr: p("10.1.0.1/31")}, nil, "10.1.0.0"},
		{"/32", Guest{Addr: p("10.1.0.1/32")}, nil, ""},
	} {
		id, ok := ChooseServerID(c.g, c.hosts)
		if (c.want == "" && ok) || (c.want != "" && id.String() != c.want) {
			t.Errorf("%s: %v %v, want %q", c.name, id, ok, c.want)
		}
	}
}
