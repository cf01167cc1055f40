package guest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

const (
	// DefaultUID is the uid and gid QEMU runs as when BootOptions leaves
	// them 0: KubeVirt's "qemu" user, the owner the plugin gives its TAPs.
	DefaultUID = 107
	// DefaultMemoryMB is the guest memory when BootOptions leaves it 0.
	DefaultMemoryMB = 128
)

// BootOptions describe a guest to boot on an existing TAP.
type BootOptions struct {
	Image     Image            // from EnsureImage
	NetNSPath string           // the pod netns holding the TAP, e.g. /var/run/netns/<name>
	TapName   string           // the existing, persistent TAP
	MAC       net.HardwareAddr // guest MAC; random locally administered when nil
	Queues    int              // 1 (or 0) for a single-queue TAP; >1 means IFF_MULTI_QUEUE
	UID, GID  int              // owner QEMU runs as and attaches with; 0 means DefaultUID
	CPUs      int              // guest vCPUs, default Queues: the guest enables one queue pair per vCPU
	Cmdline   string           // extra kernel arguments, typically tb.* (see the package doc)
	Console   io.Writer        // optional copy of the serial output, line by line
	MemoryMB  int              // default DefaultMemoryMB
	// Incoming starts QEMU waiting for a live migration on a unix socket
	// (VM.MigrationURI) instead of booting: the options must then equal
	// those of the VM that will migrate in (image, Cmdline, MAC, CPUs,
	// MemoryMB, Queues), as KubeVirt's target domain equals its source.
	Incoming bool
}

// Machine and CPU model of every guest, named rather than left to QEMU's
// defaults so that a migration's source and target are alike by
// construction.
const (
	machineType = "pc"
	cpuModel    = "qemu64"
)

// VM is a running QEMU guest.
type VM struct {
	cmd      *exec.Cmd
	con      *console
	tmpDir   string // owned by the guest's uid: QEMU makes its sockets there
	incoming bool

	exited  chan struct{} // closed once QEMU has been reaped and tmpDir removed
	waitErr error         // QEMU's exit status, valid once exited is closed

	stopOnce sync.Once
	stopErr  error
}

// Boot starts QEMU (TCG) on the existing TAP opts.TapName in the netns
// opts.NetNSPath, as libvirt does for an unmanaged ethernet interface: on a
// thread inside the netns it attaches to the TAP as opts.UID/GID (see
// OpenTap) and starts QEMU from that thread as that uid/gid, handing it
// the TAP fds. It returns once QEMU has started; use WaitFor to follow the
// boot. The VM is stopped when ctx is done, and by Stop.
func Boot(ctx context.Context, opts BootOptions) (*VM, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, fmt.Errorf("find qemu (see InstallDeps): %w", err)
	}
	tmpDir, kernel, initrd, err := stageImage(opts.Image, opts.UID, opts.GID)
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		os.RemoveAll(tmpDir)
		return nil, fmt.Errorf("create console pipe: %w", err)
	}

	cmd := exec.Command(qemu, qemuArgs(opts, tmpDir, kernel, initrd)...)
	cmd.Dir = tmpDir
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(opts.UID), Gid: uint32(opts.GID), Groups: []uint32{}},
		// Tied to the starting thread, which stays alive (locked, in
		// cmd.Wait) for as long as QEMU runs; so QEMU dies with us.
		Pdeathsig: syscall.SIGKILL,
		Setpgid:   true,
	}
	vm := &VM{cmd: cmd, tmpDir: tmpDir, incoming: opts.Incoming, exited: make(chan struct{})}
	vm.con = newConsole(pr, opts.Console)

	started := make(chan error, 1)
	go vm.run(opts, pw, started)
	if err := <-started; err != nil {
		<-vm.exited
		<-vm.con.done
		return nil, fmt.Errorf("boot guest on tap %s: %w", opts.TapName, err)
	}
	go vm.stopWhenDone(ctx)
	return vm, nil
}

func (o BootOptions) withDefaults() (BootOptions, error) {
	if o.Image.Kernel == "" || o.Image.Initrd == "" {
		return o, errors.New("boot guest: no image (see EnsureImage)")
	}
	if o.NetNSPath == "" || o.TapName == "" {
		return o, errors.New("boot guest: NetNSPath and TapName are required")
	}
	if o.Queues < 1 {
		o.Queues = 1
	}
	if o.UID == 0 {
		o.UID = DefaultUID
	}
	if o.GID == 0 {
		o.GID = DefaultUID
	}
	if o.CPUs < 1 {
		// Like KubeVirt's networkInterfaceMultiqueue, the other way round:
		// virtio-net enables min(queues, vCPUs) queue pairs and QEMU
		// detaches the TAP queues it does not use.
		o.CPUs = o.Queues
	}
	if o.MemoryMB <= 0 {
		o.MemoryMB = DefaultMemoryMB
	}
	if o.MAC == nil {
		o.MAC = make(net.HardwareAddr, 6)
		if _, err := rand.Read(o.MAC); err != nil {
			return o, fmt.Errorf("boot guest: random MAC: %w", err)
		}
		o.MAC[0] = o.MAC[0]&^1 | 2 // unicast, locally administered
	}
	return o, nil
}

// stageImage copies the image into a fresh world-readable temp dir:
// QEMU runs as uid 107, which may not be able to reach the cache. The dir
// belongs to that uid, so QEMU can create its QMP and migration sockets
// in it.
func stageImage(img Image, uid, gid int) (dir, kernel, initrd string, err error) {
	dir, err = os.MkdirTemp("", "tbguest-")
	if err != nil {
		return "", "", "", fmt.Errorf("create guest dir: %w", err)
	}
	kernel, initrd = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img")
	err = os.Chmod(dir, 0o755)
	if err == nil {
		err = os.Chown(dir, uid, gid)
	}
	if err == nil {
		err = copyFile(img.Kernel, kernel, 0o644)
	}
	if err == nil {
		err = copyFile(img.Initrd, initrd, 0o644)
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", "", "", fmt.Errorf("stage guest image: %w", err)
	}
	return dir, kernel, initrd, nil
}

// qemuArgs builds the QEMU command line. The TAP fds arrive as 3, 4, …
// (cmd.ExtraFiles). vhost is off because /dev/vhost-net needs privileges
// QEMU does not have here, and romfile= skips the iPXE option ROM, which
// a direct kernel boot does not use. virtio-net negotiates GUEST_ANNOUNCE
// by default, so after a migration QEMU both sends its RARP announce and
// asks the guest for gratuitous ARP.
func qemuArgs(o BootOptions, dir, kernel, initrd string) []string {
	netdev := "tap,id=n0,vhost=off,fd=3"
	device := "virtio-net-pci,netdev=n0,romfile=,mac=" + o.MAC.String()
	if o.Queues > 1 {
		fds := make([]string, o.Queues)
		for i := range fds {
			fds[i] = strconv.Itoa(3 + i)
		}
		netdev = "tap,id=n0,vhost=off,fds=" + strings.Join(fds, ":")
		// One vector per rx and tx queue, plus config and control.
		device += fmt.Sprintf(",mq=on,vectors=%d", 2*o.Queues+2)
	}
	args := []string{
		"-name", "tbguest-" + o.TapName,
		"-machine", machineType,
		"-cpu", cpuModel,
		"-accel", "tcg",
		"-nographic", "-nodefaults", "-no-reboot",
		"-m", strconv.Itoa(o.MemoryMB),
		"-smp", strconv.Itoa(o.CPUs),
		"-kernel", kernel,
		"-initrd", initrd,
		"-append", strings.TrimSpace("console=ttyS0 quiet panic=-1 no_timer_check " + o.Cmdline),
		"-serial", "stdio",
		"-netdev", netdev,
		"-device", device,
		"-qmp", "unix:" + qmpPath(dir) + ",server=on,wait=off",
	}
	if o.Incoming {
		args = append(args, "-incoming", migrationURI(dir))
	}
	return args
}

func qmpPath(dir string) string { return filepath.Join(dir, "qmp.sock") }

func migrationURI(dir string) string { return "unix:" + filepath.Join(dir, "migrate.sock") }

// run starts QEMU and reaps it, on a thread that stays in the pod netns
// for QEMU's whole life (see lockThreadInNetNS and Pdeathsig).
func (vm *VM) run(o BootOptions, pw *os.File, started chan<- error) {
	defer close(vm.exited)
	defer os.RemoveAll(vm.tmpDir)
	err := vm.start(o, pw)
	started <- err
	if err == nil {
		vm.waitErr = vm.cmd.Wait()
	}
}

func (vm *VM) start(o BootOptions, pw *os.File) error {
	// QEMU has its own copy once started; ours must go so the console
	// reader sees EOF when QEMU exits.
	defer pw.Close()
	if err := lockThreadInNetNS(o.NetNSPath); err != nil {
		return err
	}
	taps, err := openTapHere(o.TapName, o.Queues, o.UID, o.GID, 0)
	if err != nil {
		return err
	}
	// Only QEMU's copies may keep the TAP attached, so that it loses
	// carrier as soon as QEMU exits.
	defer closeFiles(taps)
	vm.cmd.ExtraFiles = taps
	if err := vm.cmd.Start(); err != nil {
		return fmt.Errorf("start qemu: %w", err)
	}
	return nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

func (vm *VM) stopWhenDone(ctx context.Context) {
	select {
	case <-ctx.Done():
		vm.Stop()
	case <-vm.exited:
	}
}

// Stop kills QEMU (SIGKILL to its PID), reaps it and removes its temp
// files. It is safe to call more than once and after the guest powered
// off by itself.
func (vm *VM) Stop() error {
	vm.stopOnce.Do(func() {
		err := vm.cmd.Process.Kill()
		if err != nil && !errors.Is(err, os.ErrProcessDone) {
			vm.stopErr = fmt.Errorf("kill qemu %d: %w", vm.PID(), err)
		}
		<-vm.exited
		<-vm.con.done
	})
	return vm.stopErr
}

// Wait waits for QEMU to exit by itself (the guest powers off after its
// probes unless tb.hold=1) and returns its exit status.
func (vm *VM) Wait(ctx context.Context) error {
	select {
	case <-vm.exited:
		<-vm.con.done
		return vm.waitErr
	case <-ctx.Done():
		return fmt.Errorf("wait for qemu %d to exit: %w", vm.PID(), ctx.Err())
	}
}

// WaitFor waits for a console line containing marker (looking at the
// whole output so far, so markers printed earlier are found too) and
// returns it.
func (vm *VM) WaitFor(ctx context.Context, marker string) (string, error) {
	line, err := vm.con.waitFor(ctx, marker)
	if errors.Is(err, errConsoleClosed) {
		<-vm.exited
		return "", fmt.Errorf("wait for %q on the guest console: qemu exited first (%v)", marker, exitText(vm.waitErr))
	}
	return line, err
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// PID is QEMU's process id.
func (vm *VM) PID() int { return vm.cmd.Process.Pid }

// Lines returns the serial console output so far, one entry per line.
func (vm *VM) Lines() []string { return vm.con.snapshot() }

// Output returns the serial console output so far.
func (vm *VM) Output() string { return strings.Join(vm.con.snapshot(), "\n") }

// Results returns the TBPROBE lines printed so far, parsed.
func (vm *VM) Results() []Probe {
	var probes []Probe
	for _, l := range vm.con.snapshot() {
		if p, ok := ParseProbe(l); ok {
			probes = append(probes, p)
		}
	}
	return probes
}
