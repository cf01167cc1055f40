package spoof

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// chainInfo is what Verify checks of a base chain.
type chainInfo struct {
	typ      nftables.ChainType
	base     bool // it has a hook
	hooknum  nftables.ChainHook
	priority nftables.ChainPriority
	policy   nftables.ChainPolicy
	device   string // "" unless hooked on exactly one device
}

// getChain reads a chain with one NFT_MSG_GETCHAIN and decodes its hook
// itself: the library decodes the hook but not the device it is on. A
// missing table or chain yields an error wrapping unix.ENOENT.
func getChain(t *nftables.Table, chain string) (chainInfo, error) {
	req, err := getChainRequest(t, chain)
	if err != nil {
		return chainInfo{}, err
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return chainInfo{}, fmt.Errorf("open netlink: %w", err)
	}
	defer conn.Close()
	msgs, err := conn.Execute(req)
	if err != nil {
		return chainInfo{}, err
	}
	if len(msgs) != 1 || len(msgs[0].Data) < 4 {
		return chainInfo{}, fmt.Errorf("get chain %s: unexpected reply", chain)
	}
	return decodeChain(msgs[0].Data[4:]) // after the nfgenmsg
}

func decodeChain(b []byte) (chainInfo, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return chainInfo{}, fmt.Errorf("decode chain: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	var c chainInfo
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_CHAIN_TYPE:
			c.typ = nftables.ChainType(ad.String())
		case unix.NFTA_CHAIN_POLICY:
			c.policy = nftables.ChainPolicy(ad.Uint32())
		case unix.NFTA_CHAIN_HOOK:
			c.base = true
			ad.Nested(func(hd *netlink.AttributeDecoder) error {
				for hd.Next() {
					switch hd.Type() {
					case unix.NFTA_HOOK_HOOKNUM:
						c.hooknum = nftables.ChainHook(hd.Uint32())
					case unix.NFTA_HOOK_PRIORITY:
						c.priority = nftables.ChainPriority(hd.Int32())
					case unix.NFTA_HOOK_DEV:
						c.device = hd.String()
					}
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return chainInfo{}, fmt.Errorf("decode chain: %w", err)
	}
	return c, nil
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
