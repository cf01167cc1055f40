package guest

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VnetHdrLen is the length of the virtio_net_hdr that precedes every frame
// read from or written to a fd returned by OpenTap (IFF_VNET_HDR, default
// header size).
const VnetHdrLen = 10

// tapFlags are the TUNSETIFF flags of a KubeVirt-style TAP: no packet
// information, virtio-net header, and one fd per queue when multi-queue.
func tapFlags(queues int) uint16 {
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if queues > 1 {
		flags |= unix.IFF_MULTI_QUEUE
	}
	return flags
}

// OpenTap attaches to the existing TAP name in the network namespace at
// nsPath, one fd per queue, the way an unprivileged QEMU given fds by
// libvirt ends up attached: /dev/net/tun is opened as root (it is
// root-only here), then TUNSETIFF is issued as uid/gid, so the kernel
// checks that the TAP's owner or group allows it (EPERM otherwise) and
// that IFF_MULTI_QUEUE matches the device (EINVAL otherwise, which is why
// queues must be 1 exactly when the TAP is single-queue).
//
// The fds are non-blocking and registered with the Go poller, so reads
// honour deadlines; each frame carries a VnetHdrLen-byte header.
func OpenTap(nsPath, name string, queues int, uid, gid int) ([]*os.File, error) {
	var files []*os.File
	err := onNetNSThread(nsPath, func() error {
		var err error
		files, err = openTapHere(name, queues, uid, gid, unix.O_NONBLOCK)
		return err
	})
	return files, err
}

// onNetNSThread runs fn on an OS thread of its own that has entered the
// network namespace at nsPath, and waits for it.
func onNetNSThread(nsPath string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		if err := lockThreadInNetNS(nsPath); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// lockThreadInNetNS locks the calling goroutine to its thread and moves
// the thread into the netns at nsPath. It never unlocks the thread: the
// thread's netns (and, briefly, its credentials) differ from the rest of
// the process, and when a goroutine exits while locked the runtime retires
// its thread instead of handing it to other goroutines. So call it only
// from a goroutine that ends when the work in the netns is done.
func lockThreadInNetNS(nsPath string) error {
	runtime.LockOSThread()
	return enterNetNS(nsPath)
}

func enterNetNS(nsPath string) error {
	fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter netns %s: %w", nsPath, err)
	}
	return nil
}

// openTapHere must run on a locked thread in the TAP's netns: the tun
// device resolves the name in the netns of the thread that opened
// /dev/net/tun.
func openTapHere(name string, queues, uid, gid int, extraFlags int) ([]*os.File, error) {
	if queues < 1 {
		queues = 1
	}
	fds := make([]int, 0, queues)
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	for i := 0; i < queues; i++ {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|extraFlags, 0)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("open /dev/net/tun: %w", err)
		}
		fds = append(fds, fd)
	}
	err := asUser(uid, gid, func() error {
		for i, fd := range fds {
			if err := tunSetIff(fd, name, tapFlags(queues)); err != nil {
				return fmt.Errorf("attach queue %d of tap %s as %d:%d: %w", i, name, uid, gid, err)
			}
		}
		return nil
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), fmt.Sprintf("tap:%s/%d", name, i))
	}
	return files, nil
}

func tunSetIff(fd int, name string, flags uint16) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	return nil
}

// asUser runs fn with the calling thread's real and effective uid/gid set
// to uid/gid and no supplementary groups, then returns the thread to root.
// It uses the raw syscalls because the libc-style wrappers (and
// syscall.Setresuid) change every thread of the process. The saved ids
// stay 0: that keeps the capabilities permitted (but not effective, so the
// kernel's owner check is what decides) and lets us switch back.
func asUser(uid, gid int, fn func() error) error {
	groups, err := unix.Getgroups()
	if err != nil {
		return fmt.Errorf("get groups: %w", err)
	}
	if err := threadSetgroups(nil); err != nil {
		return err
	}
	if err := threadSetres(unix.SYS_SETRESGID, gid, gid, 0); err != nil {
		return err
	}
	if err := threadSetres(unix.SYS_SETRESUID, uid, uid, 0); err != nil {
		return err
	}
	ferr := fn()
	if err := threadSetres(unix.SYS_SETRESUID, 0, 0, 0); err != nil {
		return err
	}
	if err := threadSetres(unix.SYS_SETRESGID, 0, 0, 0); err != nil {
		return err
	}
	if err := threadSetgroups(groups); err != nil {
		return err
	}
	return ferr
}

func threadSetres(trap uintptr, r, e, s int) error {
	if _, _, errno := unix.RawSyscall(trap, uintptr(r), uintptr(e), uintptr(s)); errno != 0 {
		name := map[uintptr]string{unix.SYS_SETRESUID: "setresuid", unix.SYS_SETRESGID: "setresgid"}[trap]
		return fmt.Errorf("%s(%d, %d, %d) on thread: %w", name, r, e, s, errno)
	}
	return nil
}

func threadSetgroups(groups []int) error {
	gids := make([]uint32, len(groups))
	for i, g := range groups {
		gids[i] = uint32(g)
	}
	var p unsafe.Pointer
	if len(gids) > 0 {
		p = unsafe.Pointer(&gids[0])
	}
	_, _, errno := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gids)), uintptr(p), 0)
	runtime.KeepAlive(gids)
	if errno != 0 {
		return fmt.Errorf("setgroups on thread: %w", errno)
	}
	return nil
}
