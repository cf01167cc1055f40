package link

// The pod end of the veth and the TAP share a link group, so one request
// deletes both: the kernel unregisters them as one batch and pays the RCU
// grace period that dominates device deletion once, not per link.

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// DeleteGroup removes every link of group g in the calling thread's netns; nil
// if there is none. Group 0 is every link's default and is refused.
func DeleteGroup(g uint32) error {
	if g == 0 {
		return fmt.Errorf("delete link group 0: refused, it holds every ungrouped link")
	}
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(g)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	if err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link group %d: %w", g, err)
	}
	return nil
}
