package link

import (
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
)

// VerifyTap checks the TAP against its spec: everything a hypervisor relies
// on when it opens the device. The error lists every difference.
func VerifyTap(s Tap) error {
	l, err := netlink.LinkByName(s.Name)
	if err != nil {
		return fmt.Errorf("tap %s: %w", s.Name, err)
	}
	t, ok := l.(*netlink.Tuntap)
	if !ok {
		return fmt.Errorf("tap %s is a %s, not a tap", s.Name, l.Type())
	}
	var bad []string
	want := func(ok bool, format string, a ...any) {
		if !ok {
			bad = append(bad, fmt.Sprintf(format, a...))
		}
	}
	a := t.Attrs()
	want(t.Mode == netlink.TUNTAP_MODE_TAP, "mode is %v, not tap", t.Mode)
	want(!t.NonPersist, "is not persistent")
	want(t.Flags&netlink.TUNTAP_VNET_HDR != 0, "lacks vnet_hdr")
	want(t.Flags&netlink.TUNTAP_NO_PI != 0, "lacks no_pi")
	want(t.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 == s.MultiQueue, "multi_queue is %v, want %v", !s.MultiQueue, s.MultiQueue)
	want(int64(int32(t.Owner)) == s.Owner, "owner is %d, want %d", int32(t.Owner), s.Owner)
	want(int64(int32(t.Group)) == s.Group, "group is %d, want %d", int32(t.Group), s.Group)
	want(s.MTU == 0 || a.MTU == s.MTU, "mtu is %d, want %d", a.MTU, s.MTU)
	want(a.Flags&net.FlagUp != 0, "is down")
	want(s.MAC == nil || a.HardwareAddr.String() == s.MAC.String(), "mac is %s, want %s", a.HardwareAddr, s.MAC)
	if len(bad) > 0 {
		return fmt.Errorf("tap %s: %s", s.Name, strings.Join(bad, "; "))
	}
	return nil
}
