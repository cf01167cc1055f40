package spoof

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

var errNoVerdict = errors.New("element carries no verdict")

// getVerdictElement fetches one element of a verdict map by key with a
// single NFT_MSG_GETSETELEM request. The library only offers a dump of the
// whole set, which would make checking one port cost O(ports). A missing
// table, map or element yields an error wrapping unix.ENOENT.
func getVerdictElement(t *nftables.Table, set string, key []byte) (*expr.Verdict, error) {
	req, err := getElementRequest(t, set, key)
	if err != nil {
		return nil, err
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	defer conn.Close()
	msgs, err := conn.Execute(req)
	if err != nil {
		return nil, err
	}
	if len(msgs) != 1 {
		return nil, fmt.Errorf("get map element: got %d replies, want 1", len(msgs))
	}
	return parseVerdictElement(msgs[0].Data)
}

func getElementRequest(t *nftables.Table, set string, key []byte) (netlink.Message, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, t.Name)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(unix.NFTA_LIST_ELEM, func(ae *netlink.AttributeEncoder) error {
			ae.Nested(unix.NFTA_SET_ELEM_KEY, func(ae *netlink.AttributeEncoder) error {
				ae.Bytes(unix.NFTA_DATA_VALUE, key)
				return nil
			})
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return netlink.Message{}, fmt.Errorf("encode get map element request: %w", err)
	}
	// nfgenmsg: family, version, resource id.
	data := append([]byte{byte(t.Family), unix.NFNETLINK_V0, 0, 0}, attrs...)
	return netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request,
		},
		Data: data,
	}, nil
}

// parseVerdictElement walks NEWSETELEM's elements list down to the verdict
// of its first element: ELEMENTS > LIST_ELEM > ELEM_DATA > DATA_VERDICT.
func parseVerdictElement(data []byte) (*expr.Verdict, error) {
	if len(data) < 4 {
		return nil, fmt.Errorf("parse map element: short message")
	}
	path := []uint16{unix.NFTA_SET_ELEM_LIST_ELEMENTS, unix.NFTA_LIST_ELEM,
		unix.NFTA_SET_ELEM_DATA, unix.NFTA_DATA_VERDICT}
	b, err := descend(data[4:], path)
	if err != nil {
		return nil, fmt.Errorf("parse map element: %w", err)
	}
	return decodeVerdict(b)
}

// descend returns the payload of the nested attribute reached by following
// the attribute types in path.
func descend(b []byte, path []uint16) ([]byte, error) {
	for _, typ := range path {
		next, err := findAttr(b, typ)
		if err != nil {
			return nil, err
		}
		b = next
	}
	return b, nil
}

func findAttr(b []byte, typ uint16) ([]byte, error) {
	attrs, err := netlink.UnmarshalAttributes(b)
	if err != nil {
		return nil, err
	}
	for _, a := range attrs {
		if a.Type&^netlink.Nested == typ {
			return a.Data, nil
		}
	}
	if typ == unix.NFTA_SET_ELEM_DATA || typ == unix.NFTA_DATA_VERDICT {
		return nil, errNoVerdict
	}
	return nil, fmt.Errorf("attribute %d missing", typ)
}

func decodeVerdict(b []byte) (*expr.Verdict, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, fmt.Errorf("parse verdict: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	v := &expr.Verdict{}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			v.Kind = expr.VerdictKind(int32(ad.Uint32()))
		case unix.NFTA_VERDICT_CHAIN:
			v.Chain = ad.String()
		}
	}
	if err := ad.Err(); err != nil {
		return nil, fmt.Errorf("parse verdict: %w", err)
	}
	return v, nil
}
