package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// pluginCall is one exec of a CNI plugin the way libcni's RawExec does it:
// invoke.Args.AsEnv for the environment, the config on stdin, the result
// read from stdout. It must run on a thread in the node netns.
type pluginCall struct {
	Bin         string
	Command     string
	ContainerID string
	Netns       string
	IfName      string
	Path        string // CNI_PATH
	Args        string // CNI_ARGS (e.g. K8S_POD_NAMESPACE=…;K8S_POD_NAME=…), if any
	Stdin       []byte
}

type callResult struct {
	Dur      time.Duration // fork+exec+wait, as the runtime pays it
	CPU      time.Duration // user+sys of the plugin and the children it waited for (IPAM)
	Stdout   []byte
	MaxRSSKB int64 // only via the launcher
	Faults   int64 // page faults of the plugin and the children it waited for (IPAM)
}

func (c pluginCall) env() []string {
	a := &invoke.Args{Command: c.Command, ContainerID: c.ContainerID, NetNS: c.Netns, IfName: c.IfName, Path: c.Path, PluginArgsStr: c.Args}
	return a.AsEnv()
}

// run execs the plugin directly and times it.
func (c pluginCall) run(ctx context.Context) (callResult, error) {
	cmd := exec.CommandContext(ctx, c.Bin)
	return c.start(cmd)
}

// runMeasured execs the plugin through the launcher, which reports the
// call's peak RSS on fd 3. The launcher is needed because a child's
// ru_maxrss starts from its parent's peak RSS (exec_mmap takes the
// hiwater mark of the mm it replaces, which vfork shares and fork copies),
// so a plugin exec'd from this large process would report our RSS.
func (c pluginCall) runMeasured(ctx context.Context, launcher string) (callResult, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return callResult{}, err
	}
	defer r.Close()
	cmd := exec.CommandContext(ctx, launcher, c.Bin)
	cmd.ExtraFiles = []*os.File{w}
	res, err := c.start(cmd)
	w.Close()
	if err != nil {
		return res, err
	}
	var buf [64]byte
	n, _ := r.Read(buf[:])
	res.MaxRSSKB, err = strconv.ParseInt(strings.TrimSpace(string(buf[:n])), 10, 64)
	if err != nil {
		return res, fmt.Errorf("launcher reported no rusage: %q", buf[:n])
	}
	return res, nil
}

func (c pluginCall) start(cmd *exec.Cmd) (callResult, error) {
	var stdout, stderr bytes.Buffer
	cmd.Env = c.env()
	cmd.Stdin = bytes.NewBuffer(c.Stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	res := callResult{Dur: time.Since(t0), Stdout: stdout.Bytes()}
	if ps := cmd.ProcessState; ps != nil {
		res.CPU, res.Faults = ps.UserTime()+ps.SystemTime(), faultsOf(ps)
	}
	if err != nil {
		return res, fmt.Errorf("%s %s %s: %w: stdout %q stderr %q",
			filepath.Base(c.Bin), c.Command, c.ContainerID, err, bytes.TrimSpace(stdout.Bytes()), bytes.TrimSpace(stderr.Bytes()))
	}
	return res, nil
}

// execTimed execs a binary with no arguments and no CNI environment (the
// floor: what any exec costs) and returns wall and CPU time and its page
// faults.
func execTimed(ctx context.Context, bin string) (wall, cpu time.Duration, faults int64, err error) {
	cmd := exec.CommandContext(ctx, bin)
	t0 := time.Now()
	err = cmd.Run()
	wall = time.Since(t0)
	if ps := cmd.ProcessState; ps != nil {
		cpu, faults = ps.UserTime()+ps.SystemTime(), faultsOf(ps)
	}
	return wall, cpu, faults, err
}

// faultsOf is the page faults (minor and major) wait4 reported for a
// process and the children it reaped.
func faultsOf(ps *os.ProcessState) int64 {
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0
	}
	return ru.Minflt + ru.Majflt
}

// The two helper programs are built from source at start-up, static
// (CGO_ENABLED=0), into the run's temp dir.
const trivialSrc = `package main

func main() {}
`

// The launcher forks and execs its argument with the same stdio and
// environment, waits, and writes the child's ru_maxrss (KiB, which wait4
// takes as the max over the child and the children it reaped, e.g. the
// IPAM plugin) to fd 3. It is kept tiny so that its own peak RSS, which
// the child inherits as a starting value, stays far below a plugin's.
const launcherSrc = `package main

import (
	"os"
	"strconv"
	"syscall"
)

func main() {
	pid, err := syscall.ForkExec(os.Args[1], os.Args[1:], &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}})
	if err != nil {
		os.Exit(126)
	}
	var ws syscall.WaitStatus
	var ru syscall.Rusage
	for {
		_, err = syscall.Wait4(pid, &ws, 0, &ru)
		if err != syscall.EINTR {
			break
		}
	}
	os.NewFile(3, "rusage").WriteString(strconv.FormatInt(ru.Maxrss, 10) + "\n")
	os.Exit(ws.ExitStatus())
}
`

// buildHelper builds one helper program into dir/name.
// buildRepoHelper builds a helper that lives in this module (it needs the
// module's dependencies) as the plugin is built: static, trimmed, stripped.
func buildRepoHelper(dir, name, pkg string) (string, error) {
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Dir = harness.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", name, err, b)
	}
	return out, nil
}

func buildHelper(dir, name, src string) (string, error) {
	srcDir := filepath.Join(dir, "src-"+name)
	if err := os.MkdirAll(srcDir, 0o755); err != nil {
		return "", err
	}
	files := map[string]string{"go.mod": "module " + name + "\n\ngo 1.22\n", "main.go": src}
	for f, text := range files {
		if err := os.WriteFile(filepath.Join(srcDir, f), []byte(text), 0o644); err != nil {
			return "", err
		}
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = srcDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", name, err, b)
	}
	return out, nil
}
