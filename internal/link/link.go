// Package link owns the attachment's links: the veth pair that joins the
// pod to the host bridge, the VM's TAP, and the link group that lets DEL
// remove the pod side in one request. Everything goes through rtnetlink and
// the tun ioctls; existing links are changed by name with raw RTM_SETLINK
// requests, so each change is one round trip with no lookup before it.
package link

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// ErrNameTaken is returned when a link of one of the attachment's names
// already exists: it is never taken over.
var ErrNameTaken = errors.New("link name already in use")

// ErrForeign is returned when a link has one of the attachment's names but
// not what tapbridge gives its own (type, MAC, link group): it is left
// alone, as it may be anybody's.
var ErrForeign = errors.New("not made by tapbridge, left alone")

// ErrBridgeFull is returned when the bridge has no free port number.
var ErrBridgeFull = errors.New("bridge has no free port (the kernel allows 1023)")

// Attrs are the changes to apply; zero values are left alone.
type Attrs struct {
	MAC   net.HardwareAddr
	MTU   int
	Group uint32
}

// Set applies attrs to the link called name in the current netns.
func Set(name string, a Attrs) error {
	var attrs []*nl.RtAttr
	if a.MAC != nil {
		attrs = append(attrs, nl.NewRtAttr(unix.IFLA_ADDRESS, a.MAC))
	}
	if a.MTU != 0 {
		attrs = append(attrs, nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(a.MTU))))
	}
	if a.Group != 0 {
		attrs = append(attrs, nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(a.Group)))
	}
	if err := setLink(name, 0, attrs...); err != nil {
		return fmt.Errorf("configure %s: %w", name, err)
	}
	return nil
}

// Up sets a link up.
func Up(name string) error {
	if err := setLink(name, unix.IFF_UP); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// NoAddrGen turns IPv6 address generation off on a link, so it never
// sends a DAD probe or a router solicitation of its own. The kernel applies
// IFLA_AF_SPEC after the link flags, so do this before Up. It is one
// netlink request, where DisableIPv6's /proc/sys path costs a dentry walk
// over every netns that has the same path, which grows with the pods.
func NoAddrGen(name string) error {
	mode := nl.NewRtAttr(unix.IFLA_INET6_ADDR_GEN_MODE, []byte{addrGenModeNone})
	af := nl.NewRtAttr(unix.AF_INET6, mode.Serialize())
	if err := setLink(name, 0, nl.NewRtAttr(unix.IFLA_AF_SPEC, af.Serialize())); err != nil {
		return fmt.Errorf("set addrgenmode none on %s: %w", name, err)
	}
	return nil
}

// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE from linux/if_link.h.
const addrGenModeNone = 1

// DisableIPv6 turns IPv6 off on one link of the current netns (the pod's),
// so the pod's own stack neither answers nor sends anything for the VM's
// L2. A kernel without IPv6 has nothing to turn off.
func DisableIPv6(name string) error {
	path := "/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6"
	err := os.WriteFile(path, []byte("1"), 0)
	if errors.Is(err, fs.ErrNotExist) {
		if _, statErr := os.Stat("/proc/sys/net/ipv6"); statErr != nil {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("disable IPv6 on %s: %w", name, err)
	}
	return nil
}

// UpWithoutIPv6 disables IPv6 on each link, then sets it up: the order
// matters, a link that comes up with IPv6 on sends DAD at once.
func UpWithoutIPv6(names ...string) error {
	for _, name := range names {
		if err := DisableIPv6(name); err != nil {
			return err
		}
		if err := Up(name); err != nil {
			return err
		}
	}
	return nil
}

// setLink changes a link found by name (ifi_index 0 plus IFLA_IFNAME).
func setLink(name string, flags uint32, attrs ...*nl.RtAttr) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Flags, msg.Change = flags, flags
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	for _, a := range attrs {
		req.AddData(a)
	}
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}
