package nft

import (
	"encoding/hex"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
)

// Expr is one expression of a rule. Every Expr is a comparable value, so a
// rule read back from the kernel compares with == to the rule meant.
// Loads and comparisons always use register 1, the only one the plugin's
// rules need; a rule the kernel reports with any other register decodes as
// Raw.
type Expr interface {
	// name is the kernel's name of the expression type.
	name() string
	// encode appends the expression's NFTA_EXPR_DATA attributes.
	encode(*attrs)
	String() string
}

// register is the data register the plugin's loads and comparisons use.
const register = unix.NFT_REG_1

// PayloadBase is the header a Payload offset counts from.
type PayloadBase uint32

const (
	LinkLayer PayloadBase = unix.NFT_PAYLOAD_LL_HEADER
	Network   PayloadBase = unix.NFT_PAYLOAD_NETWORK_HEADER
	Transport PayloadBase = unix.NFT_PAYLOAD_TRANSPORT_HEADER
)

// Payload loads Len bytes of the frame at Offset from Base into the register.
type Payload struct {
	Base        PayloadBase
	Offset, Len uint32
}

func (Payload) name() string { return "payload" }

func (p Payload) encode(a *attrs) {
	a.u32(unix.NFTA_PAYLOAD_DREG, register)
	a.u32(unix.NFTA_PAYLOAD_BASE, uint32(p.Base))
	a.u32(unix.NFTA_PAYLOAD_OFFSET, p.Offset)
	a.u32(unix.NFTA_PAYLOAD_LEN, p.Len)
}

func (p Payload) String() string {
	base := map[PayloadBase]string{LinkLayer: "ll", Network: "nh", Transport: "th"}[p.Base]
	if base == "" {
		base = fmt.Sprintf("base(%d)", p.Base)
	}
	return fmt.Sprintf("load %s[%d:%d]", base, p.Offset, p.Offset+p.Len)
}

// CmpOp is a comparison of Cmp.
type CmpOp uint32

const (
	Eq  CmpOp = unix.NFT_CMP_EQ
	Neq CmpOp = unix.NFT_CMP_NEQ
)

// Cmp compares the register with Data, and ends the rule unless it holds.
// Data is a string (of raw bytes) so that Cmp values compare with ==.
type Cmp struct {
	Op   CmpOp
	Data string
}

func (Cmp) name() string { return "cmp" }

func (c Cmp) encode(a *attrs) {
	a.u32(unix.NFTA_CMP_SREG, register)
	a.u32(unix.NFTA_CMP_OP, uint32(c.Op))
	a.nest(unix.NFTA_CMP_DATA, func(d *attrs) { d.put(unix.NFTA_DATA_VALUE, []byte(c.Data)) })
}

func (c Cmp) String() string {
	op := map[CmpOp]string{Eq: "==", Neq: "!="}[c.Op]
	if op == "" {
		op = fmt.Sprintf("op(%d)", c.Op)
	}
	return fmt.Sprintf("%s %x", op, c.Data)
}

// MetaKey is packet metadata a Meta loads.
type MetaKey uint32

// L4Proto is the transport protocol, found after IPv6 extension headers.
const L4Proto MetaKey = unix.NFT_META_L4PROTO

// Meta loads packet metadata into the register.
type Meta struct{ Key MetaKey }

func (Meta) name() string { return "meta" }

func (m Meta) encode(a *attrs) {
	a.u32(unix.NFTA_META_KEY, uint32(m.Key))
	a.u32(unix.NFTA_META_DREG, register)
}

func (m Meta) String() string {
	if m.Key == L4Proto {
		return "load meta l4proto"
	}
	return fmt.Sprintf("load meta(%d)", m.Key)
}

// Counter counts the packets and bytes that reach it. Its values are not
// part of the expression: the kernel changes them, and rules compare equal
// whatever they counted.
type Counter struct{}

func (Counter) name() string { return "counter" }

func (Counter) encode(a *attrs) {
	a.u64(unix.NFTA_COUNTER_BYTES, 0)
	a.u64(unix.NFTA_COUNTER_PACKETS, 0)
}

func (Counter) String() string { return "counter" }

// Verdict ends the rule's evaluation with a final verdict (an immediate
// expression writing the verdict register). It is also a base chain's policy.
type Verdict int32

// The netfilter verdict codes (NF_DROP, NF_ACCEPT).
const (
	Drop   Verdict = 0
	Accept Verdict = 1
)

func (Verdict) name() string { return "immediate" }

func (v Verdict) encode(a *attrs) {
	a.u32(unix.NFTA_IMMEDIATE_DREG, unix.NFT_REG_VERDICT)
	a.nest(unix.NFTA_IMMEDIATE_DATA, func(d *attrs) {
		d.nest(unix.NFTA_DATA_VERDICT, func(vd *attrs) { vd.u32(unix.NFTA_VERDICT_CODE, uint32(v)) })
	})
}

func (v Verdict) String() string {
	switch v {
	case Drop:
		return "drop"
	case Accept:
		return "accept"
	}
	return fmt.Sprintf("verdict(%d)", int32(v))
}

// Raw is an expression this package does not model (or models with other
// attributes than the kernel reported): its name and NFTA_EXPR_DATA as read.
// It never equals an expression the plugin writes.
type Raw struct {
	Name string
	Data string
}

func (r Raw) name() string    { return r.Name }
func (r Raw) encode(a *attrs) { *a = append(*a, r.Data...) }
func (r Raw) String() string {
	return fmt.Sprintf("%s(%s)", r.Name, hex.EncodeToString([]byte(r.Data)))
}

// encodeExprs encodes a rule's expressions as NFTA_RULE_EXPRESSIONS content.
func encodeExprs(a *attrs, exprs []Expr) {
	for _, e := range exprs {
		a.nest(unix.NFTA_LIST_ELEM, func(el *attrs) {
			el.str(unix.NFTA_EXPR_NAME, e.name())
			el.nest(unix.NFTA_EXPR_DATA, e.encode)
		})
	}
}

// decodeExprs decodes NFTA_RULE_EXPRESSIONS content.
func decodeExprs(b []byte) ([]Expr, error) {
	elems, err := parseAttrs(b)
	if err != nil {
		return nil, err
	}
	exprs := make([]Expr, 0, len(elems))
	for _, el := range elems {
		m, err := attrMap(el.data)
		if err != nil {
			return nil, err
		}
		exprs = append(exprs, decodeExpr(cstring(m[unix.NFTA_EXPR_NAME]), m[unix.NFTA_EXPR_DATA]))
	}
	return exprs, nil
}

// decodeExpr decodes one expression, or returns it as Raw when it is not
// exactly a form this package writes.
func decodeExpr(name string, data []byte) Expr {
	raw := Raw{Name: name, Data: string(data)}
	m, err := attrMap(data)
	if err != nil {
		return raw
	}
	u32 := func(typ uint16) uint32 { v, _ := be32(m[typ]); return v }
	// has reports whether the attributes are exactly these, each 4 bytes
	// unless listed in other.
	has := func(want []uint16, other ...uint16) bool {
		if len(m) != len(want) {
			return false
		}
		for _, typ := range want {
			v, ok := m[typ]
			if _, is32 := be32(v); !ok || !is32 && !slices.Contains(other, typ) {
				return false
			}
		}
		return true
	}
	switch name {
	case "payload":
		if has([]uint16{unix.NFTA_PAYLOAD_DREG, unix.NFTA_PAYLOAD_BASE, unix.NFTA_PAYLOAD_OFFSET, unix.NFTA_PAYLOAD_LEN}) &&
			u32(unix.NFTA_PAYLOAD_DREG) == register {
			return Payload{Base: PayloadBase(u32(unix.NFTA_PAYLOAD_BASE)),
				Offset: u32(unix.NFTA_PAYLOAD_OFFSET), Len: u32(unix.NFTA_PAYLOAD_LEN)}
		}
	case "cmp":
		if has([]uint16{unix.NFTA_CMP_SREG, unix.NFTA_CMP_OP, unix.NFTA_CMP_DATA}, unix.NFTA_CMP_DATA) &&
			u32(unix.NFTA_CMP_SREG) == register {
			if d, err := attrMap(m[unix.NFTA_CMP_DATA]); err == nil && len(d) == 1 && d[unix.NFTA_DATA_VALUE] != nil {
				return Cmp{Op: CmpOp(u32(unix.NFTA_CMP_OP)), Data: string(d[unix.NFTA_DATA_VALUE])}
			}
		}
	case "meta":
		if has([]uint16{unix.NFTA_META_KEY, unix.NFTA_META_DREG}) && u32(unix.NFTA_META_DREG) == register {
			return Meta{Key: MetaKey(u32(unix.NFTA_META_KEY))}
		}
	case "counter":
		if len(m) == 2 && len(m[unix.NFTA_COUNTER_BYTES]) == 8 && len(m[unix.NFTA_COUNTER_PACKETS]) == 8 {
			return Counter{}
		}
	case "immediate":
		if has([]uint16{unix.NFTA_IMMEDIATE_DREG, unix.NFTA_IMMEDIATE_DATA}, unix.NFTA_IMMEDIATE_DATA) &&
			u32(unix.NFTA_IMMEDIATE_DREG) == unix.NFT_REG_VERDICT {
			if v, ok := decodeVerdict(m[unix.NFTA_IMMEDIATE_DATA]); ok {
				return v
			}
		}
	}
	return raw
}

// decodeVerdict decodes NFTA_DATA holding a final verdict (no jump target).
func decodeVerdict(b []byte) (Verdict, bool) {
	d, err := attrMap(b)
	if err != nil || len(d) != 1 || d[unix.NFTA_DATA_VERDICT] == nil {
		return 0, false
	}
	vd, err := attrMap(d[unix.NFTA_DATA_VERDICT])
	if err != nil || len(vd) != 1 {
		return 0, false
	}
	code, ok := be32(vd[unix.NFTA_VERDICT_CODE])
	return Verdict(int32(code)), ok
}
