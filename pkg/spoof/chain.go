package spoof

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

var errNoDevice = errors.New("base chain is bound to no single device")

// chainDevice returns the device a netdev base chain is hooked on, with a
// single NFT_MSG_GETCHAIN request: the library decodes a chain's hook but
// not its device. A missing table or chain yields an error wrapping
// unix.ENOENT.
func chainDevice(t *nftables.Table, chain string) (string, error) {
	req, err := getChainRequest(t, chain)
	if err != nil {
		return "", err
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return "", fmt.Errorf("open netlink: %w", err)
	}
	defer conn.Close()
	msgs, err := conn.Execute(req)
	if err != nil {
		return "", err
	}
	if len(msgs) != 1 || len(msgs[0].Data) < 4 {
		return "", fmt.Errorf("get chain %s: unexpected reply", chain)
	}
	// nfgenmsg, then CHAIN_HOOK > HOOK_DEV.
	hook, err := findAttr(msgs[0].Data[4:], unix.NFTA_CHAIN_HOOK)
	if err != nil {
		return "", err
	}
	dev, err := findAttr(hook, unix.NFTA_HOOK_DEV)
	if err != nil {
		return "", errNoDevice
	}
	return string(trimNUL(dev)), nil
}

func getChainRequest(t *nftables.Table, chain string) (netlink.Message, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.String(unix.NFTA_CHAIN_TABLE, t.Name)
	ae.String(unix.NFTA_CHAIN_NAME, chain)
	attrs, err := ae.Encode()
	if err != nil {
		return netlink.Message{}, fmt.Errorf("encode get chain request: %w", err)
	}
	// nfgenmsg: family, version, resource id.
	data := append([]byte{byte(t.Family), unix.NFNETLINK_V0, 0, 0}, attrs...)
	return netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETCHAIN),
			Flags: netlink.Request,
		},
		Data: data,
	}, nil
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
	return nil, fmt.Errorf("attribute %d missing", typ)
}

func trimNUL(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}
