package link

// The veth pair joins a pod to the host bridge. The whole pair (host end
// enslaved, pod end named, addressed and moved into the pod netns) is made
// by one RTM_NEWLINK, which the kernel applies all-or-nothing: a failure (a
// taken name, a full bridge) leaves no device.

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Veth describes both ends of the pair.
type Veth struct {
	HostName    string
	HostMAC     net.HardwareAddr
	BridgeIndex int
	PodName     string
	PodMAC      net.HardwareAddr
	PodNSFd     int
	PodGroup    uint32
	MTU         int
}

// CreateVeth makes the pair from the host netns, the host end already a port of
// the bridge and both ends down: each comes up once it is configured.
func CreateVeth(p Veth) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(p.HostName)))
	req.AddData(nl.NewRtAttr(unix.IFLA_ADDRESS, p.HostMAC))
	req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(p.MTU))))
	req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(p.BridgeIndex))))

	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("veth"))
	peer := info.AddRtAttr(nl.IFLA_INFO_DATA, nil).AddRtAttr(nl.VETH_INFO_PEER, nil)
	nl.NewIfInfomsgChild(peer, unix.AF_UNSPEC)
	peer.AddRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(p.PodName))
	peer.AddRtAttr(unix.IFLA_ADDRESS, p.PodMAC)
	peer.AddRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(p.MTU)))
	peer.AddRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(p.PodGroup))
	peer.AddRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(p.PodNSFd)))
	req.AddData(info)

	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return vethError(p, err)
	}
	return nil
}

func vethError(p Veth, err error) error {
	switch {
	case errors.Is(err, unix.EEXIST), errors.Is(err, unix.EBUSY):
		return fmt.Errorf("create veth %s/%s: %w: %w", p.HostName, p.PodName, ErrNameTaken, err)
	case errors.Is(err, unix.EXFULL):
		return fmt.Errorf("create veth %s: %w", p.HostName, ErrBridgeFull)
	}
	return fmt.Errorf("create veth %s/%s: %w", p.HostName, p.PodName, err)
}

// DeleteVeth removes the pair by its host end; nil if it is already gone. The
// kernel removes the peer with it, wherever the peer is. A link of that name
// that is not a veth, or whose MAC ours refuses, is not tapbridge's: it is
// left alone, with ErrForeign.
func DeleteVeth(hostName string, ours func(net.HardwareAddr) bool) error {
	link, err := netlink.LinkByName(hostName)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find veth %s: %w", hostName, err)
	}
	if _, ok := link.(*netlink.Veth); !ok {
		return fmt.Errorf("delete veth %s: it is a %s: %w", hostName, link.Type(), ErrForeign)
	}
	if mac := link.Attrs().HardwareAddr; !ours(mac) {
		return fmt.Errorf("delete veth %s: its MAC %s is not the one tapbridge gave it: %w", hostName, mac, ErrForeign)
	}
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete veth %s: %w", hostName, err)
	}
	return nil
}

// MasterOf names the bridge a link is a port of: "" when the link does
// not exist or is no port.
func MasterOf(name string) (string, error) {
	l, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("find %s: %w", name, err)
	}
	if l.Attrs().MasterIndex == 0 {
		return "", nil
	}
	m, err := netlink.LinkByIndex(l.Attrs().MasterIndex)
	if err != nil {
		return "", fmt.Errorf("find the bridge of %s: %w", name, err)
	}
	return m.Attrs().Name, nil
}
