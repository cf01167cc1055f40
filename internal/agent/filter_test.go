package agent

import (
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/tapbridge/tapbridge-cni/internal/frame"
)

// TestFilter runs the filter, less its packet-type test (the VM of x/net
// has no such extension; the integration test covers it on a real
// socket), on the frames it must pass and some it must not.
func TestFilter(t *testing.T) {
	insns := requestFilter()
	if _, ok := insns[0].(bpf.LoadExtension); !ok {
		t.Fatal("the filter no longer starts with the packet-type test")
	}
	vm, err := bpf.NewVM(insns[2:]) // jumps are relative: the rest stands alone
	if err != nil {
		t.Fatal(err)
	}
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	h4 := frame.Header{Src: mac, Dst: mac, IPSrc: netip.MustParseAddr("0.0.0.0"), IPDst: netip.MustParseAddr("255.255.255.255")}
	h6 := frame.Header{Src: mac, Dst: mac, IPSrc: netip.MustParseAddr("fe80::1"), IPDst: netip.MustParseAddr("ff02::2")}
	withOptions := frame.UDP4(h4, 68, 67, []byte("x"))
	// Give the IPv4 header 4 bytes of options (IHL 6): the port moves.
	withOptions = append(append(append([]byte(nil), withOptions[:34]...), 1, 1, 1, 0), withOptions[34:]...)
	withOptions[14] = 0x46
	fragment := frame.UDP4(h4, 68, 67, []byte("x"))
	fragment[20] = 0x20
	for _, c := range []struct {
		name string
		b    []byte
		pass bool
	}{
		{"dhcpv4", frame.UDP4(h4, 68, 67, []byte("x")), true},
		{"dhcpv4 with ip options", withOptions, true},
		{"dhcpv4 reply", frame.UDP4(h4, 67, 68, []byte("x")), false},
		{"ipv4 fragment", fragment, false},
		{"dhcpv6", frame.UDP6(h6, 0, 546, 547, []byte("x")), true},
		{"dhcpv6 reply", frame.UDP6(h6, 0, 547, 546, []byte("x")), false},
		{"router solicitation", frame.ICMPv6(h6, 255, []byte{133, 0, 0, 0, 0, 0, 0, 0}), true},
		{"neighbour solicitation", frame.ICMPv6(h6, 255, []byte{135, 0, 0, 0, 0, 0, 0, 0}), false},
		{"arp", append(make([]byte, 12), 0x08, 0x06, 0, 1), false},
	} {
		n, err := vm.Run(c.b)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if (n > 0) != c.pass {
			t.Errorf("%s: filter returned %d, want pass=%v", c.name, n, c.pass)
		}
	}
}
