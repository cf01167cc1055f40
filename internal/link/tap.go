package link

// The VM's TAP lives in the pod netns: QEMU opens a TAP by name, and the
// kernel looks the name up in the netns where /dev/net/tun is opened.

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Tap is the contract with the hypervisor: it must open the TAP with the
// same multi-queue flag (the kernel answers EINVAL otherwise) as a user
// that matches Owner or Group.
type Tap struct {
	Name       string
	Owner      int64 // -1: none (only CAP_NET_ADMIN may attach)
	Group      int64 // -1: none
	MultiQueue bool
	MAC        net.HardwareAddr
	MTU        int
	LinkGroup  uint32 // shared with the pod end of the veth, see DeleteGroup
}

// Flags are the TUNSETIFF flags QEMU and libvirt use for a virtio-net TAP.
func (t Tap) Flags() uint16 {
	f := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if t.MultiQueue {
		f |= unix.IFF_MULTI_QUEUE
	}
	return f
}

// CreateTap makes a persistent TAP and gives it its MAC, MTU and link
// group, leaving it down. IFF_TUN_EXCL makes the kernel refuse an existing
// name instead of attaching to it, so a foreign TAP is never taken. The
// TAP gets its link group before it is made persistent: until then it
// lives only as long as our fd, so a crash (or an error) at any point
// leaves either nothing or a TAP that DEL finds by its group.
func CreateTap(t Tap) error {
	f, err := openTap(t)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := Set(t.Name, Attrs{MAC: t.MAC, MTU: t.MTU, Group: t.LinkGroup}); err != nil {
		return err
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("make tap %s persistent: %w", t.Name, err)
	}
	return nil
}

// openTap makes the TAP, owned as t says, and returns the fd that keeps
// it alive until it is made persistent.
func openTap(t Tap) (*os.File, error) {
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("create tap %s: %w", t.Name, err)
	}
	if err := configureTap(int(f.Fd()), t); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func configureTap(fd int, t Tap) error {
	req, err := unix.NewIfreq(t.Name)
	if err != nil {
		return fmt.Errorf("create tap %s: %w", t.Name, err)
	}
	req.SetUint16(t.Flags() | unix.IFF_TUN_EXCL)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, req); err != nil {
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create tap %s: %w", t.Name, ErrNameTaken)
		}
		return fmt.Errorf("create tap %s: %w", t.Name, err)
	}
	if t.Owner >= 0 {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, int(t.Owner)); err != nil {
			return fmt.Errorf("set owner of tap %s: %w", t.Name, err)
		}
	}
	if t.Group >= 0 {
		if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, int(t.Group)); err != nil {
			return fmt.Errorf("set group of tap %s: %w", t.Name, err)
		}
	}
	return nil
}

// DeleteTap removes the TAP of link group group; nil if it is already
// gone. Any other link of that name is left alone, with ErrForeign.
func DeleteTap(name string, group uint32) error {
	l, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find tap %s: %w", name, err)
	}
	if _, ok := l.(*netlink.Tuntap); !ok {
		return fmt.Errorf("delete tap %s: it is a %s: %w", name, l.Type(), ErrForeign)
	}
	if g := l.Attrs().Group; g != group {
		return fmt.Errorf("delete tap %s: its link group is %d, not %d: %w", name, g, group, ErrForeign)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete tap %s: %w", name, err)
	}
	return nil
}
