package cri

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// containerd is one containerd the test started: its own root, state,
// socket, config and CNI dirs under dir, run in the node's host netns and
// in mount and PID namespaces of its own (see start).
type containerd struct {
	t       *testing.T
	flavor  flavor
	dir     string
	unshare *exec.Cmd // unshare(1), containerd's parent outside its PID namespace
	pid     int       // containerd, as this test's PID namespace sees it
	pidNS   string    // its PID namespace, e.g. "pid:[4026532999]"
	exited  chan error
}

func (c *containerd) sock() string       { return filepath.Join(c.dir, "containerd.sock") }
func (c *containerd) confDir() string    { return filepath.Join(c.dir, "net.d") }
func (c *containerd) binDir() string     { return filepath.Join(c.dir, "cni-bin") }
func (c *containerd) logPath() string    { return filepath.Join(c.dir, "containerd.log") }
func (c *containerd) configPath() string { return filepath.Join(c.dir, "config.toml") }

// openInRuntime opens path p as containerd sees it: its mount namespace
// has its own /run and /var/lib (the sandboxes' netns mounts and libcni's
// cache live there), reached through /proc/<pid>/root, with symlinks
// (/var/run) resolved inside that root.
func (c *containerd) openInRuntime(p string, flags int) (*os.File, error) {
	root, err := os.Open(fmt.Sprintf("/proc/%d/root", c.pid))
	if err != nil {
		return nil, err
	}
	defer root.Close()
	fd, err := unix.Openat2(int(root.Fd()), p, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: unix.RESOLVE_IN_ROOT})
	if err != nil {
		return nil, fmt.Errorf("open %s in containerd's mount namespace: %w", p, err)
	}
	return os.NewFile(uintptr(fd), p), nil
}

// readInRuntime reads file p as containerd sees it.
func (c *containerd) readInRuntime(p string) ([]byte, error) {
	f, err := c.openInRuntime(p, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// launcher runs containerd in mount and PID namespaces of its own:
//   - a tmpfs on /run and on /var/lib, so the shims' sockets
//     (/run/containerd/s, whatever the state dir), the sandboxes' netns
//     mounts (/run/netns/cni-*) and libcni's cache (/var/lib/cni) are
//     never the machine's, and vanish with the namespace;
//   - the machine's /sys as it is, with its cgroup mounts (runc needs
//     them): `ip netns exec` would mount a fresh /sys for the netns,
//     without them, so the netns is entered with setns instead;
//   - containerd is PID 1 of its PID namespace, so when it dies the
//     kernel kills every shim, runc and pause it left, and nothing of it
//     can outlive the test.
const launcher = `set -e
mount -t tmpfs -o mode=0755 tapbridge-cri-run /run
mount -t tmpfs -o mode=0755 tapbridge-cri-varlib /var/lib
exec "$@"`

// startContainerd writes the config and starts containerd in the node's
// host netns with an empty conf_dir, as on a node whose CNI installer has
// not run yet, and waits until its CRI reports the runtime ready.
func startContainerd(t *testing.T, node *harness.Node, fl flavor, cgroupParent string) *containerd {
	t.Helper()
	c := &containerd{t: t, flavor: fl, dir: t.TempDir(), exited: make(chan error, 1)}
	if err := c.writeConfig(); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(c.logPath())
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	c.unshare = exec.Command("unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc", "--kill-child",
		"--", "/bin/sh", "-c", launcher, "launcher", filepath.Join(fl.binDir, "containerd"), "--config", c.configPath())
	c.unshare.Env = []string{"PATH=" + fl.binDir + ":" + runcDir() + ":/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR=" + c.dir}
	c.unshare.Stdout, c.unshare.Stderr = logf, logf
	if err := node.Host.Do(c.unshare.Start); err != nil {
		t.Fatalf("start %s: %v", fl.name, err)
	}
	go func() { c.exited <- c.unshare.Wait() }()
	t.Cleanup(func() { c.stop(cgroupParent) })
	if err := c.findPid(); err != nil {
		t.Fatal(err)
	}
	if err := c.waitReady(60*time.Second, "RuntimeReady"); err != nil {
		t.Fatal(err)
	}
	return c
}

// writeConfig writes containerd's config and the CNI bin dir:
// tapbridge-cni, host-local and loopback (containerd's CRI sets up the
// pod's lo with it before any network of conf_dir).
func (c *containerd) writeConfig() error {
	for _, d := range []string{c.confDir(), c.binDir(), filepath.Join(c.dir, "pods")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	bins := map[string]string{"tapbridge-cni": pluginPath}
	for _, p := range []string{"host-local", "loopback"} {
		bins[p] = filepath.Join(harness.CNIBinDir(), p)
	}
	for name, src := range bins {
		if _, err := os.Stat(src); err != nil {
			return fmt.Errorf("CNI plugin %s: %w (scripts/deps/cri.sh installs it)", name, err)
		}
		if err := os.Symlink(src, filepath.Join(c.binDir(), name)); err != nil {
			return err
		}
	}
	var cfg bytes.Buffer
	err := template.Must(template.New("config").Parse(c.flavor.config)).Execute(&cfg, map[string]string{
		"Dir": c.dir, "Sock": c.sock(), "BinDir": c.binDir(), "ConfDir": c.confDir(), "Image": pauseImage,
		"Runc": filepath.Join(runcDir(), "runc"),
	})
	if err != nil {
		return err
	}
	return os.WriteFile(c.configPath(), cfg.Bytes(), 0o644)
}

// findPid finds containerd: unshare's one child (the launcher, which
// execs containerd in place).
func (c *containerd) findPid() error {
	upid := c.unshare.Process.Pid
	children := fmt.Sprintf("/proc/%d/task/%d/children", upid, upid)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(children)
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		pid, _ := strconv.Atoi(f[0])
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(comm)) != "containerd" {
			continue
		}
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
		if err != nil {
			return err
		}
		c.pid, c.pidNS = pid, ns
		return nil
	}
	return fmt.Errorf("containerd did not start within 10s:\n%s", c.logTail())
}

// installConflist writes the conflist into conf_dir in place, as a CNI
// installer does once containerd runs, and waits for NetworkReady.
// containerd (1.6.20 and 2.4.2 alike) reloads conf_dir on a write, a
// rename or a removal in it, and ignores a create: a file written
// elsewhere and renamed into conf_dir is not seen until something else
// happens there (tried: NetworkReady never came within 30 s).
func (c *containerd) installConflist(conflist []byte) error {
	if err := os.WriteFile(filepath.Join(c.confDir(), "10-vmnet.conflist"), conflist, 0o644); err != nil {
		return err
	}
	return c.waitReady(30*time.Second, "RuntimeReady", "NetworkReady")
}

// waitReady waits until `crictl info` reports every one of conds.
func (c *containerd) waitReady(limit time.Duration, conds ...string) error {
	var last string
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		select {
		case err := <-c.exited:
			c.exited <- err
			return fmt.Errorf("%s exited (%v):\n%s", c.flavor.name, err, c.logTail())
		default:
		}
		out, err := c.crictl("info")
		if err != nil {
			last = err.Error()
			continue
		}
		var info struct {
			Status struct {
				Conditions []struct {
					Type    string `json:"type"`
					Status  bool   `json:"status"`
					Message string `json:"message"`
				} `json:"conditions"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			return fmt.Errorf("crictl info: %w\n%s", err, out)
		}
		ready := 0
		for _, cond := range info.Status.Conditions {
			if cond.Status && slices.Contains(conds, cond.Type) {
				ready++
			}
			last = fmt.Sprintf("%s %s", last, cond.Message)
		}
		if ready == len(conds) {
			return nil
		}
		last = out
	}
	return fmt.Errorf("%s not ready within %s: %s\n%s", c.flavor.name, limit, last, c.logTail())
}

// crictl runs crictl against this containerd (its own config file, so
// the machine's /etc/crictl.yaml is never read).
func (c *containerd) crictl(args ...string) (string, error) {
	cfg := filepath.Join(c.dir, "crictl.yaml")
	if _, err := os.Stat(cfg); err != nil {
		y := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", c.sock(), c.sock())
		if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
			return "", err
		}
	}
	return run(crictlPath(), append([]string{"--config", cfg}, args...)...)
}

// ctr runs the flavor's ctr in the CRI's namespace (k8s.io).
func (c *containerd) ctr(args ...string) (string, error) {
	return run(filepath.Join(c.flavor.binDir, "ctr"), append([]string{"--address", c.sock(), "--namespace", "k8s.io"}, args...)...)
}

func run(bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(errOut.String()+" "+out.String()))
	}
	return out.String(), nil
}

func (c *containerd) logTail() string {
	b, _ := os.ReadFile(c.logPath())
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// stop ends containerd by its PID (SIGTERM, then SIGKILL after 15 s),
// checks that nothing of its PID namespace survives (shims, runc,
// pause), and removes the test's cgroups: each must be empty.
func (c *containerd) stop(cgroupParent string) {
	t := c.t
	if c.pid > 0 {
		_ = syscall.Kill(c.pid, syscall.SIGTERM)
	}
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		t.Errorf("%s did not exit within 15s of SIGTERM: killed", c.flavor.name)
		_ = c.unshare.Process.Kill() // --kill-child: SIGKILL to containerd, PID 1 of its namespace
		<-c.exited
	}
	if t.Failed() {
		t.Logf("log of %s:\n%s", c.flavor.name, c.logTail())
	}
	if c.pidNS != "" {
		if err := waitNoProcessIn(c.pidNS, 10*time.Second); err != nil {
			t.Error(err)
		}
	}
	if err := removeCgroups(cgroupParent); err != nil {
		t.Error(err)
	}
}

// waitNoProcessIn waits until no process is in PID namespace ns.
func waitNoProcessIn(ns string, limit time.Duration) error {
	for deadline := time.Now().Add(limit); ; time.Sleep(20 * time.Millisecond) {
		left := processesIn(ns)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of containerd's PID namespace %s still running: %v", ns, left)
		}
	}
}

func processesIn(ns string) []string {
	var left []string
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		if got, _ := os.Readlink(filepath.Join("/proc", d.Name(), "ns", "pid")); got == ns {
			comm, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "comm"))
			left = append(left, d.Name()+"("+strings.TrimSpace(string(comm))+")")
		}
	}
	return left
}

// cgroupDirs are the test's cgroup directories, one per hierarchy that
// runc made it in.
func cgroupDirs(parent string) []string {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", parent))
	if d := filepath.Join("/sys/fs/cgroup", parent); isDir(d) {
		dirs = append(dirs, d)
	}
	return dirs
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// cgroupProcs lists the processes in the test's cgroups (each pod's
// processes are in a child of the pod's cgroup_parent).
func cgroupProcs(parent string) []string {
	var procs []string
	for _, top := range cgroupDirs(parent) {
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Name() == "cgroup.procs" {
				b, _ := os.ReadFile(p)
				for _, pid := range strings.Fields(string(b)) {
					procs = append(procs, pid+" in "+filepath.Dir(p))
				}
			}
			return nil
		})
	}
	return procs
}

// removeCgroups removes the test's cgroup directories, deepest first; a
// directory that still holds a process cannot be removed, and says so.
func removeCgroups(parent string) error {
	var errs []error
	for _, top := range cgroupDirs(parent) {
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}
