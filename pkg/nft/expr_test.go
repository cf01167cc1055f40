package nft

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Each modelled expression and the same expression built with
// google/nftables, an independent encoder.
var exprCases = []struct {
	ours   Expr
	theirs expr.Any
}{
	{Payload{Base: LinkLayer, Offset: 6, Len: 6},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6}},
	{Payload{Base: Network, Offset: 12, Len: 4},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}},
	{Payload{Base: Transport, Offset: 8, Len: 16},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 8, Len: 16}},
	{Cmp{Op: Eq, Data: "\x08\x06"}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{8, 6}}},
	{Cmp{Op: Neq, Data: "\x52\x54\x00\x12\x34\x56"},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}}},
	{Cmp{Op: Eq, Data: "\x3a"}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{58}}},
	{Meta{Key: L4Proto}, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}},
	{Counter{}, &expr.Counter{}},
	{Accept, &expr.Verdict{Kind: expr.VerdictAccept}},
	{Drop, &expr.Verdict{Kind: expr.VerdictDrop}},
}

// encodeElem encodes one expression as the content of an NFTA_LIST_ELEM.
func encodeElem(e Expr) []byte {
	var a attrs
	encodeExprs(&a, []Expr{e})
	return []byte(a)[unix.SizeofNlAttr:]
}

// tree renders attributes with nested ones expanded and siblings sorted,
// so that two encodings compare equal whatever their attribute order.
func tree(t *testing.T, b []byte) string {
	t.Helper()
	var parts []string
	for len(b) > 0 {
		n := int(binary.NativeEndian.Uint16(b[0:2]))
		if n < unix.SizeofNlAttr || n > len(b) {
			t.Fatalf("malformed attribute in %x", b)
		}
		typ := binary.NativeEndian.Uint16(b[2:4])
		data := b[unix.SizeofNlAttr:n]
		if typ&unix.NLA_F_NESTED != 0 {
			parts = append(parts, fmt.Sprintf("%d{%s}", typ&^unix.NLA_F_NESTED, tree(t, data)))
		} else {
			parts = append(parts, fmt.Sprintf("%d=%x", typ, data))
		}
		b = b[min(pad(n), len(b)):]
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

func TestEncodingMatchesGoogleNftables(t *testing.T) {
	for _, c := range exprCases {
		theirs, err := expr.Marshal(unix.NFPROTO_NETDEV, c.theirs)
		if err != nil {
			t.Fatalf("google/nftables cannot marshal %T: %v", c.theirs, err)
		}
		if got, want := tree(t, encodeElem(c.ours)), tree(t, theirs); got != want {
			t.Errorf("%s encodes as\n  %s\nwant (google/nftables)\n  %s", c.ours, got, want)
		}
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	var want []Expr
	for _, c := range exprCases {
		want = append(want, c.ours)
	}
	var a attrs
	encodeExprs(&a, want)
	got, err := decodeExprs(a)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("decoded %v, want %v", got, want)
	}
}

// What the package does not model must not decode as something it does:
// it would compare equal to a rule the plugin wrote.
func TestDecodeForeignAsRaw(t *testing.T) {
	foreign := map[string]expr.Any{
		"payload into register 2": &expr.Payload{DestRegister: 2, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
		"payload write": &expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1,
			Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
		"cmp on register 3":            &expr.Cmp{Op: expr.CmpOpEq, Register: 3, Data: []byte{1}},
		"meta into register 2":         &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 2},
		"meta set":                     &expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
		"jump":                         &expr.Verdict{Kind: expr.VerdictJump, Chain: "elsewhere"},
		"lookup":                       &expr.Lookup{SourceRegister: 1, SetName: "s", SetID: 1},
		"immediate into data register": &expr.Immediate{Register: 1, Data: []byte{1, 2, 3, 4}},
	}
	for what, e := range foreign {
		b, err := expr.Marshal(unix.NFPROTO_NETDEV, e)
		if err != nil {
			t.Fatalf("%s: marshal: %v", what, err)
		}
		var a attrs
		a.put(unix.NFTA_LIST_ELEM|unix.NLA_F_NESTED, b)
		got, err := decodeExprs(a)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if _, raw := got[0].(Raw); !raw || len(got) != 1 {
			t.Errorf("%s decoded as %v, want one Raw", what, got)
		}
	}
}

// A counter equals Counter{} whatever it counted.
func TestCounterIgnoresValues(t *testing.T) {
	b, err := expr.Marshal(unix.NFPROTO_NETDEV, &expr.Counter{Bytes: 1500, Packets: 1})
	if err != nil {
		t.Fatal(err)
	}
	var a attrs
	a.put(unix.NFTA_LIST_ELEM|unix.NLA_F_NESTED, b)
	got, err := decodeExprs(a)
	if err != nil || len(got) != 1 || got[0] != (Counter{}) {
		t.Fatalf("decoded %v (%v), want [counter]", got, err)
	}
}

// Kernels for machines without efficient unaligned access put an empty
// pad attribute before each 64-bit value.
func TestPaddedCounter(t *testing.T) {
	var data attrs
	data.put(unix.NFTA_COUNTER_PAD, nil)
	data.u64(unix.NFTA_COUNTER_BYTES, 1500)
	data.put(unix.NFTA_COUNTER_PAD, nil)
	data.u64(unix.NFTA_COUNTER_PACKETS, 1)
	if got := decodeExpr("counter", data); got != (Counter{}) {
		t.Fatalf("padded counter decoded as %v", got)
	}
}

func TestParseAttrsRejectsTruncation(t *testing.T) {
	var a attrs
	a.str(unix.NFTA_TABLE_NAME, "tapbridge-x")
	for _, b := range [][]byte{a[:3], a[:len(a)-8]} {
		if _, err := parseAttrs(b); err == nil {
			t.Errorf("parseAttrs(%x) accepted a truncated attribute", b)
		}
	}
}
