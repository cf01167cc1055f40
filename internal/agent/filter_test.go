package agent

import (
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/tapbridge/tapbridge-cni/internal/frame"
)

// TestFilter runs each kind of port filter, less its packet-type test
// (the VM of x/net has no such extension; the integration tests cover it
// on a real socket), on the frames it must pass and some it must not.
func TestFilter(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	h4 := frame.Header{Src: mac, Dst: mac, IPSrc: netip.MustParseAddr("0.0.0.0"), IPDst: netip.MustParseAddr("255.255.255.255")}
	h6 := frame.Header{Src: mac, Dst: mac, IPSrc: netip.MustParseAddr("fe80::1"), IPDst: netip.MustParseAddr("ff02::2")}
	withOptions := frame.UDP4(h4, 68, 67, []byte("x"))
	// Give the IPv4 header 4 bytes of options (IHL 6): the port moves.
	withOptions = append(append(append([]byte(nil), withOptions[:34]...), 1, 1, 1, 0), withOptions[34:]...)
	withOptions[14] = 0x46
	fragment := frame.UDP4(h4, 68, 67, []byte("x"))
	fragment[20] = 0x20
	ll := netip.MustParseAddr("fe80::3c1a:9b2e:74d0:15f3")
	dad := dadFrame(mac, ll)
	notLinkLocal := dadFrame(mac, netip.MustParseAddr("2001:db8::10"))
	otherPrefix := dadFrame(mac, netip.MustParseAddr("fe80:0:0:1::10"))
	fromAddr := dadFrame(mac, ll)
	fromAddr[14+8+15] = 1 // source fe80::… instead of ::
	lowHops := dadFrame(mac, ll)
	lowHops[14+7] = 64
	for _, c := range []struct {
		name               string
		b                  []byte
		serve, learn, both bool
	}{
		{"dhcpv4", frame.UDP4(h4, 68, 67, []byte("x")), true, false, true},
		{"dhcpv4 with ip options", withOptions, true, false, true},
		{"dhcpv4 reply", frame.UDP4(h4, 67, 68, []byte("x")), false, false, false},
		{"ipv4 fragment", fragment, false, false, false},
		{"dhcpv6", frame.UDP6(h6, 0, 546, 547, []byte("x")), true, false, true},
		{"dhcpv6 reply", frame.UDP6(h6, 0, 547, 546, []byte("x")), false, false, false},
		{"router solicitation", frame.ICMPv6(h6, 255, []byte{133, 0, 0, 0, 0, 0, 0, 0}), true, false, true},
		{"DAD for a link-local", dad, false, true, true},
		{"DAD for a global address", notLinkLocal, false, false, false},
		{"DAD for fe80:0:0:1::/64", otherPrefix, false, false, false},
		{"NS from an address", fromAddr, false, false, false},
		{"DAD with hop limit 64", lowHops, false, false, false},
		{"neighbour advertisement", frame.ICMPv6(h6, 255, append([]byte{136, 0, 0, 0, 0, 0, 0, 0}, ll.AsSlice()...)), false, false, false},
		{"arp", append(make([]byte, 12), 0x08, 0x06, 0, 1), false, false, false},
	} {
		for _, k := range []struct {
			kinds filterKinds
			pass  bool
		}{{filterKinds{serve: true}, c.serve}, {filterKinds{learn: true}, c.learn}, {filterKinds{serve: true, learn: true}, c.both}} {
			insns := portFilter(k.kinds)
			if _, ok := insns[0].(bpf.LoadExtension); !ok {
				t.Fatal("the filter no longer starts with the packet-type test")
			}
			vm, err := bpf.NewVM(insns[2:]) // jumps are relative: the rest stands alone
			if err != nil {
				t.Fatalf("%+v: %v", k.kinds, err)
			}
			n, err := vm.Run(c.b)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if (n > 0) != k.pass {
				t.Errorf("%s, %+v: filter returned %d, want pass=%v", c.name, k.kinds, n, k.pass)
			}
		}
	}
}

// dadFrame is the DAD neighbour solicitation a guest sends for target.
func dadFrame(mac net.HardwareAddr, target netip.Addr) []byte {
	h := frame.Header{Src: mac, Dst: net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 0},
		IPSrc: netip.IPv6Unspecified(), IPDst: solicitedNode(target)}
	return frame.ICMPv6(h, 255, append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, target.AsSlice()...))
}
