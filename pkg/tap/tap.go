// Package tap makes the VM's TAP device in the current netns (the pod's):
// QEMU opens a TAP by name, and the kernel looks the name up in the netns
// where /dev/net/tun is opened, so the TAP must live beside the VM.
package tap

import (
	"errors"
	"fmt"
	"net"
	"os"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/pkg/link"
)

// ErrNameTaken is returned when a link of that name already exists.
var ErrNameTaken = errors.New("link name already in use")

// Spec is the contract with the hypervisor: it must open the TAP with the
// same multi-queue flag (the kernel answers EINVAL otherwise) as a user
// that matches Owner or Group.
type Spec struct {
	Name       string
	Owner      int64 // -1: none (only CAP_NET_ADMIN may attach)
	Group      int64 // -1: none
	MultiQueue bool
	MAC        net.HardwareAddr
	MTU        int
	LinkGroup  uint32 // shared with the pod end of the veth, see package group
}

// Flags are the TUNSETIFF flags QEMU and libvirt use for a virtio-net TAP.
func (s Spec) Flags() uint16 {
	f := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if s.MultiQueue {
		f |= unix.IFF_MULTI_QUEUE
	}
	return f
}

// Create makes a persistent TAP and gives it its MAC, MTU and link group,
// leaving it down. IFF_TUN_EXCL makes the kernel refuse an existing name
// instead of attaching to it, so a foreign TAP is never taken. The TAP
// gets its link group before it is made persistent: until then it lives
// only as long as our fd, so a crash (or an error) at any point leaves
// either nothing or a TAP that DEL finds by its group.
func Create(s Spec) error {
	f, err := createDevice(s)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := link.Set(s.Name, link.Attrs{MAC: s.MAC, MTU: s.MTU, Group: s.LinkGroup}); err != nil {
		return err
	}
	if err := ioctl(f, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("make tap %s persistent: %w", s.Name, err)
	}
	return nil
}

// createDevice makes the TAP, owned as the spec says, and returns the fd
// that keeps it alive until it is made persistent.
func createDevice(s Spec) (*os.File, error) {
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("create tap %s: %w", s.Name, err)
	}
	if err := configureDevice(f, s); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func configureDevice(f *os.File, s Spec) error {
	var req ifreq
	copy(req.name[:unix.IFNAMSIZ-1], s.Name)
	req.flags = s.Flags() | unix.IFF_TUN_EXCL
	if err := ioctl(f, unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); err != nil {
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create tap %s: %w", s.Name, ErrNameTaken)
		}
		return fmt.Errorf("create tap %s: %w", s.Name, err)
	}
	if s.Owner >= 0 {
		if err := ioctl(f, unix.TUNSETOWNER, uintptr(s.Owner)); err != nil {
			return fmt.Errorf("set owner of tap %s: %w", s.Name, err)
		}
	}
	if s.Group >= 0 {
		if err := ioctl(f, unix.TUNSETGROUP, uintptr(s.Group)); err != nil {
			return fmt.Errorf("set group of tap %s: %w", s.Name, err)
		}
	}
	return nil
}

type ifreq struct {
	name  [unix.IFNAMSIZ]byte
	flags uint16
	_     [22]byte
}

func ioctl(f *os.File, req uint, arg uintptr) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), arg)
	if errno != 0 {
		return errno
	}
	return nil
}

// Delete removes the TAP; nil if it is already gone.
func Delete(name string) error {
	l, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find tap %s: %w", name, err)
	}
	if _, ok := l.(*netlink.Tuntap); !ok {
		return fmt.Errorf("delete tap %s: it is a %s", name, l.Type())
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete tap %s: %w", name, err)
	}
	return nil
}
