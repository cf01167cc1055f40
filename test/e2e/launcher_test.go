package e2e

import (
	"bufio"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/e2e/cluster"
	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
)

// qemuUID is KubeVirt's "qemu" user and group, which its non-root
// virt-launcher runs libvirt and QEMU as, and which owns the plugin's TAPs.
const qemuUID = guest.DefaultUID

// launcher is libvirt the way KubeVirt's non-root virt-launcher runs it: a
// session-mode libvirtd (qemu:///session) as uid/gid 107, with no
// capabilities, inside the pod's network namespace. Its config, sockets,
// logs and domain state live in dir, a temp dir of the test's. It runs in
// a mount namespace of its own where, as in the virt-launcher container,
// /dev/net/tun is usable by any user (the machine's is root-only) and
// /etc/passwd knows the qemu user (libvirt refuses a uid without one).
// Debian 12's libvirt 9.0 has no split daemons, so libvirtd stands in for
// virtqemud; the QEMU driver code is the same.
type launcher struct {
	pod     *cluster.Pod
	dir     string
	cmd     *exec.Cmd
	exited  chan struct{}  // closed once libvirtd has been reaped
	qemus   map[string]int // QEMU's PID by domain name, while it should run
	created []string       // every domain name virsh create was given
}

// libvirtdPath is where Debian's libvirt-daemon puts the daemon.
const libvirtdPath = "/usr/sbin/libvirtd"

// requireLibvirt skips when libvirt is not installed: scripts/deps/libvirt.sh
// installs it, and `make test` runs that first, so in CI the tier runs.
func requireLibvirt(t *testing.T) {
	t.Helper()
	for _, p := range []string{libvirtdPath, "/usr/bin/virsh"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("libvirt is not installed (%v): run scripts/deps/libvirt.sh, as `make deps` does", err)
		}
	}
}

// startLauncher starts libvirtd in the pod's netns and waits until virsh
// can talk to it. The test's cleanup kills, by PID, any QEMU it started
// and the daemon, and removes dir.
func startLauncher(ctx context.Context, t *testing.T, pod *cluster.Pod) *launcher {
	t.Helper()
	dir, err := os.MkdirTemp("", "tblibvirt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l := &launcher{pod: pod, dir: dir, exited: make(chan struct{}), qemus: map[string]int{}}
	if err := l.writeFiles(); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(dir, "daemon.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	l.cmd = exec.Command("ip", "netns", "exec", pod.NS.Name, "unshare", "--mount", "--propagation", "private",
		"sh", "-ec", launcherScript, "launcher", dir, strconv.Itoa(qemuUID))
	l.cmd.Stdout, l.cmd.Stderr = out, out
	// Every exec in the chain replaces the process: the PID is libvirtd's.
	if err := l.cmd.Start(); err != nil {
		t.Fatalf("start libvirtd: %v", err)
	}
	go func() { _ = l.cmd.Wait(); close(l.exited) }()
	t.Cleanup(func() {
		if err := l.stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("libvirtd of %s: %s\n%s", pod.Name, l.readFile("daemon.out"), l.readFile("home/libvirtd.log"))
		}
	})
	if err := l.waitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return l
}

// launcherScript runs as root in the pod netns and a fresh mount
// namespace: it sets up that namespace's /dev/net/tun and /etc/passwd,
// then becomes the qemu user (no groups, no capabilities, an empty
// bounding set) and execs libvirtd. --timeout ends an idle daemon if the
// test dies without its cleanup.
const launcherScript = `dir=$1 uid=$2
mount --bind "$dir/passwd" /etc/passwd
mount --bind "$dir/group" /etc/group
mount -t tmpfs -o mode=0755,size=64k tbtun /dev/net
mknod -m 0666 /dev/net/tun c 10 200
exec setpriv --reuid="$uid" --regid="$uid" --clear-groups --inh-caps=-all --bounding-set=-all \
	env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$dir/home" XDG_RUNTIME_DIR="$dir/run" \
	XDG_CONFIG_HOME="$dir/config" XDG_CACHE_HOME="$dir/cache" \
	libvirtd --config "$dir/libvirtd.conf" --timeout 300`

// writeFiles lays out dir: the qemu user's home and XDG dirs, the
// daemon's config (warnings to a log file; QEMU's stdio to a file, so no
// virtlogd is spawned), the passwd and group files, and a world-readable
// copy of the guest image (the cache may not be reachable by uid 107).
func (l *launcher) writeFiles() error {
	if err := os.Chmod(l.dir, 0o755); err != nil {
		return err
	}
	for _, d := range []string{"home", "run", "config/libvirt", "cache", "image"} {
		if err := os.MkdirAll(filepath.Join(l.dir, d), 0o700); err != nil {
			return err
		}
	}
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return err
	}
	group, err := os.ReadFile("/etc/group")
	if err != nil {
		return err
	}
	files := map[string]string{
		"libvirtd.conf":            fmt.Sprintf("log_outputs = \"3:file:%s/home/libvirtd.log\"\n", l.dir),
		"config/libvirt/qemu.conf": "stdio_handler = \"file\"\n",
		"passwd":                   string(passwd) + fmt.Sprintf("qemu:x:%d:%d:qemu:%s/home:/usr/sbin/nologin\n", qemuUID, qemuUID, l.dir),
		"group":                    string(group) + fmt.Sprintf("qemu:x:%d:\n", qemuUID),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(l.dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	for src, dst := range map[string]string{image.Kernel: "image/vmlinuz", image.Initrd: "image/initrd.img"} {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(l.dir, dst), b, 0o644); err != nil {
			return err
		}
	}
	for _, d := range []string{"home", "run", "config", "config/libvirt", "config/libvirt/qemu.conf", "cache", "image"} {
		if err := os.Chown(filepath.Join(l.dir, d), qemuUID, qemuUID); err != nil {
			return err
		}
	}
	return os.Chmod(filepath.Join(l.dir, "image"), 0o755)
}

func (l *launcher) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		_, err := l.virsh(ctx, "uri")
		if err == nil {
			return nil
		}
		select {
		case <-l.exited:
			return fmt.Errorf("libvirtd exited: %v\n%s", l.cmd.ProcessState, l.readFile("daemon.out"))
		case <-ctx.Done():
			return fmt.Errorf("libvirtd not answering: %v (last: %v)", ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// PID is libvirtd's.
func (l *launcher) PID() int { return l.cmd.Process.Pid }

// uri names the daemon's socket outright, so virsh never autostarts a
// session daemon of its own.
func (l *launcher) uri() string {
	return "qemu+unix:///session?socket=" + filepath.Join(l.dir, "run", "libvirt", "libvirt-sock")
}

// virsh runs virsh as virt-launcher does: in the daemon's mount and
// network namespaces, as the qemu user. The error carries its output.
func (l *launcher) virsh(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(l.PID()), "-m", "-n", "--",
		"setpriv", "--reuid=" + strconv.Itoa(qemuUID), "--regid=" + strconv.Itoa(qemuUID), "--clear-groups",
		"env", "-i", "HOME=" + filepath.Join(l.dir, "home"), "XDG_RUNTIME_DIR=" + filepath.Join(l.dir, "run"),
		"XDG_CONFIG_HOME=" + filepath.Join(l.dir, "config"), "XDG_CACHE_HOME=" + filepath.Join(l.dir, "cache"),
		"virsh", "-q", "-c", l.uri()}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("virsh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// create starts a transient domain (virsh create, as virt-launcher) and
// records its QEMU's PID for the checks and the cleanup.
func (l *launcher) create(ctx context.Context, d domain) error {
	path := filepath.Join(l.dir, "home", d.Name+".xml")
	b, err := d.XML()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return err
	}
	l.created = append(l.created, d.Name)
	if _, err := l.virsh(ctx, "create", path); err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(l.readFile("run/libvirt/qemu/run/" + d.Name + ".pid")))
	if err != nil {
		return fmt.Errorf("pid of domain %s: %w", d.Name, err)
	}
	l.qemus[d.Name] = pid
	return nil
}

// destroy stops the domain and waits until its QEMU is gone.
func (l *launcher) destroy(ctx context.Context, name string) error {
	if _, err := l.virsh(ctx, "destroy", name); err != nil {
		return err
	}
	pid := l.qemus[name]
	delete(l.qemus, name)
	for deadline := time.Now().Add(10 * time.Second); processAlive(pid, name); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("qemu %d of %s still runs after virsh destroy", pid, name)
		}
	}
	return nil
}

// stop kills what is left: the QEMUs (libvirt daemonizes them, so they
// outlive the daemon) by PID, then libvirtd (SIGTERM, SIGKILL after 10 s).
func (l *launcher) stop() error {
	var errs []error
	for name, pid := range l.qemus {
		if processAlive(pid, name) {
			errs = append(errs, syscall.Kill(pid, syscall.SIGKILL))
		}
	}
	l.qemus = map[string]int{}
	// A domain whose PID was never read (a failure right after virsh
	// create): its name is unique to this launcher, so a scan is safe.
	for _, name := range l.created {
		for _, pid := range qemuPIDsOf(name) {
			errs = append(errs, syscall.Kill(pid, syscall.SIGKILL))
		}
	}
	select {
	case <-l.exited:
		return errors.Join(errs...)
	default:
	}
	errs = append(errs, l.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-l.exited:
	case <-time.After(10 * time.Second):
		errs = append(errs, l.cmd.Process.Kill())
		<-l.exited
	}
	return errors.Join(errs...)
}

// processAlive reports whether pid still runs QEMU for domain name (not
// some later process that reuses the PID).
func processAlive(pid int, name string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), "guest="+name+",")
}

func (l *launcher) readFile(rel string) string {
	b, _ := os.ReadFile(filepath.Join(l.dir, rel))
	return string(b)
}

// consolePath is where the domain's serial console is written.
func (l *launcher) consolePath(name string) string {
	return filepath.Join(l.dir, "home", name+".console")
}

// waitConsole waits for a line of the domain's serial console holding
// marker and returns it.
func (l *launcher) waitConsole(ctx context.Context, name, marker string) (string, error) {
	for {
		for _, line := range strings.Split(l.readFile("home/"+name+".console"), "\n") {
			if strings.Contains(line, marker) {
				return strings.TrimSpace(line), nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("wait for %q on the console of %s: %w\n%s", marker, name, ctx.Err(), l.readFile("home/"+name+".console"))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// probes waits for TBDONE and returns the TBPROBE results by "kind target".
func (l *launcher) probes(ctx context.Context, name string) (map[string]guest.Probe, error) {
	if _, err := l.waitConsole(ctx, name, "TBDONE"); err != nil {
		return nil, err
	}
	out := map[string]guest.Probe{}
	sc := bufio.NewScanner(strings.NewReader(l.readFile("home/" + name + ".console")))
	for sc.Scan() {
		if p, ok := guest.ParseProbe(sc.Text()); ok {
			out[p.Kind+" "+p.Target] = p
		}
	}
	return out, nil
}

// domain is the part of a virt-launcher domain that matters here: a
// direct kernel boot (TCG) of the test guest, and the interface KubeVirt's
// tap binding writes: type ethernet on the plugin's TAP, not managed by
// libvirt, with the pod interface's MAC and MTU, and with
// networkInterfaceMultiqueue a vhost driver asking for Queues queues.
type domain struct {
	Name     string
	Tap      string
	MAC      string
	MTU      int
	Queues   int // 0: no <driver>, a single-queue open
	VCPUs    int
	Cmdline  string
	Launcher *launcher
}

var domainTemplate = template.Must(template.New("domain").Funcs(template.FuncMap{"x": xmlText}).Parse(`<domain type='qemu'>
  <name>{{x .Name}}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>{{.VCPUs}}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{{x .Kernel}}</kernel>
    <initrd>{{x .Initrd}}</initrd>
    <cmdline>{{x .FullCmdline}}</cmdline>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{{x .Emulator}}</emulator>
    <interface type='ethernet'>
      <mac address='{{x .MAC}}'/>
      <target dev='{{x .Tap}}' managed='no'/>
      <model type='virtio-non-transitional'/>
      <mtu size='{{.MTU}}'/>{{if .Queues}}
      <driver name='vhost' queues='{{.Queues}}'/>{{end}}
      <rom enabled='no'/>
    </interface>
    <serial type='file'>
      <source path='{{x .Console}}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
`))

func (d domain) Kernel() string   { return filepath.Join(d.Launcher.dir, "image", "vmlinuz") }
func (d domain) Initrd() string   { return filepath.Join(d.Launcher.dir, "image", "initrd.img") }
func (d domain) Console() string  { return d.Launcher.consolePath(d.Name) }
func (d domain) Emulator() string { p, _ := exec.LookPath("qemu-system-x86_64"); return p }
func (d domain) FullCmdline() string {
	return strings.TrimSpace("console=ttyS0 quiet panic=-1 no_timer_check " + d.Cmdline)
}

// XML renders the domain definition.
func (d domain) XML() ([]byte, error) {
	var b strings.Builder
	if err := domainTemplate.Execute(&b, d); err != nil {
		return nil, fmt.Errorf("domain %s: %w", d.Name, err)
	}
	return []byte(b.String()), nil
}

func xmlText(s string) (string, error) {
	var b strings.Builder
	err := xml.EscapeText(&b, []byte(s))
	return b.String(), err
}
