package harness

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// BridgeName is the admin's bridge in every sandbox node.
const BridgeName = "br-test"

// BridgeMAC is set explicitly so MAC-stability checks mean something.
var BridgeMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0xfe}

// Node is a simulated host: netns Host with the bridge, and netns Peer
// joined to the bridge by a veth (a neighbour on the flat L2).
type Node struct {
	ID   string
	Host Netns
	Peer Netns
}

// NewNode builds a sandbox node; call Close to remove it.
func NewNode(id string) (*Node, error) {
	n := &Node{ID: id}
	var err error
	if n.Host, err = NewNetns(id + "-host"); err != nil {
		return nil, err
	}
	if n.Peer, err = NewNetns(id + "-peer"); err != nil {
		return nil, errors.Join(err, n.Close())
	}
	if err := n.Host.Do(n.setUpHost); err != nil {
		return nil, errors.Join(err, n.Close())
	}
	return n, nil
}

func (n *Node) setUpHost() error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: BridgeName, HardwareAddr: BridgeMAC}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge: %w", err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo"}}); err != nil {
		return err
	}
	return n.joinPeer(br)
}

// joinPeer plugs the peer netns into the bridge with a veth "hp0"/"p0".
func (n *Node) joinPeer(br *netlink.Bridge) error {
	peerNS, err := openNS(n.Peer)
	if err != nil {
		return err
	}
	defer peerNS.Close()
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "hp0", MasterIndex: br.Index},
		PeerName:      "p0",
		PeerNamespace: netlink.NsFd(int(peerNS)),
	}
	if err := netlink.LinkAdd(v); err != nil {
		return fmt.Errorf("add peer veth: %w", err)
	}
	if err := netlink.LinkSetUp(v); err != nil {
		return err
	}
	return n.Peer.Do(func() error {
		for _, name := range []string{"lo", "p0"} {
			if err := netlink.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
				return fmt.Errorf("set %s up in peer: %w", name, err)
			}
		}
		return nil
	})
}

// Close removes the node's namespaces (and with them every device).
func (n *Node) Close() error {
	return errors.Join(n.Peer.Delete(), n.Host.Delete())
}
