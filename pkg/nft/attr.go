package nft

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// attrs encodes netlink attributes. nftables wants integer payloads in
// network byte order; the attribute headers are in host byte order.
type attrs []byte

func (a *attrs) put(typ uint16, payload []byte) {
	var hdr [unix.SizeofNlAttr]byte
	binary.NativeEndian.PutUint16(hdr[0:2], uint16(unix.SizeofNlAttr+len(payload)))
	binary.NativeEndian.PutUint16(hdr[2:4], typ)
	*a = append(*a, hdr[:]...)
	*a = append(*a, payload...)
	*a = append(*a, zeros[:pad(len(payload))-len(payload)]...)
}

// zeros pads an attribute to the alignment.
var zeros [unix.NLA_ALIGNTO - 1]byte

func (a *attrs) u32(typ uint16, v uint32) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	a.put(typ, b[:])
}

func (a *attrs) u64(typ uint16, v uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	a.put(typ, b[:])
}
func (a *attrs) str(typ uint16, s string) { a.put(typ, append([]byte(s), 0)) }

// nest encodes the attributes fill adds as one nested attribute.
func (a *attrs) nest(typ uint16, fill func(*attrs)) {
	var inner attrs
	fill(&inner)
	a.put(typ|unix.NLA_F_NESTED, inner)
}

// pad rounds n up to the netlink alignment (4 bytes).
func pad(n int) int { return (n + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1) }

// attr is one decoded attribute: its type without the nested and
// byte-order flags, and its payload.
type attr struct {
	typ  uint16
	data []byte
}

var errShortAttr = errors.New("truncated netlink attribute")

// parseAttrs splits b into attributes.
func parseAttrs(b []byte) ([]attr, error) {
	var out []attr
	for len(b) > 0 {
		if len(b) < unix.SizeofNlAttr {
			return nil, errShortAttr
		}
		n := int(binary.NativeEndian.Uint16(b[0:2]))
		if n < unix.SizeofNlAttr || n > len(b) {
			return nil, errShortAttr
		}
		typ := binary.NativeEndian.Uint16(b[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		out = append(out, attr{typ: typ, data: b[unix.SizeofNlAttr:n]})
		b = b[min(pad(n), len(b)):]
	}
	return out, nil
}

// attrMap indexes attributes by type; a repeated type is an error, since
// none of the objects read here repeats one. Empty attributes are skipped:
// they are the padding the kernel puts before 64-bit values on machines
// without efficient unaligned access (several per message), and nothing
// read here is ever empty.
func attrMap(b []byte) (map[uint16][]byte, error) {
	list, err := parseAttrs(b)
	if err != nil {
		return nil, err
	}
	m := make(map[uint16][]byte, len(list))
	for _, a := range list {
		if len(a.data) == 0 {
			continue
		}
		if _, dup := m[a.typ]; dup {
			return nil, fmt.Errorf("netlink attribute %d repeated", a.typ)
		}
		m[a.typ] = a.data
	}
	return m, nil
}

// cstring decodes a NUL-terminated string attribute.
func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// be32 decodes a big-endian 32-bit attribute; ok is false if it is not 4 bytes.
func be32(b []byte) (v uint32, ok bool) {
	if len(b) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(b), true
}
