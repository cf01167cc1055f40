package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// UpstreamVersion is the containernetworking/plugins release the tests and
// the benchmark run against: the one go.mod pins (and the plugin runs
// host-local and static from), read from the build.
var UpstreamVersion = pinnedVersion("github.com/containernetworking/plugins")

// pinnedVersion is module's version in go.mod: from the build's own
// record when it has one (go run, go build), else (a test binary has
// none) from `go list -m` in the module.
func pinnedVersion(module string) string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == module {
				return d.Version
			}
		}
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Version}}", module)
	cmd.Dir = RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		panic(fmt.Sprintf("harness: version of %s in go.mod: %v", module, err))
	}
	return strings.TrimSpace(string(out))
}

// RepoRoot is the module root (found from this file's location).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// CNIBinDir holds the upstream plugins, installed by EnsureUpstream.
func CNIBinDir() string { return filepath.Join(RepoRoot(), "build", "cni-bin") }

var upstreamOnce sync.Once
var upstreamErr error

// EnsureUpstream `go install`s the upstream plugins the tests use (IPAM
// host-local and static, and bridge for the benchmark) into CNIBinDir.
func EnsureUpstream() error {
	upstreamOnce.Do(func() {
		for _, p := range []string{"ipam/host-local", "ipam/static", "main/bridge"} {
			if _, err := os.Stat(filepath.Join(CNIBinDir(), filepath.Base(p))); err == nil {
				continue
			}
			pkg := "github.com/containernetworking/plugins/plugins/" + p + "@" + UpstreamVersion
			cmd := exec.Command("go", "install", pkg)
			cmd.Env = append(os.Environ(), "GOBIN="+CNIBinDir(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				upstreamErr = fmt.Errorf("go install %s: %w\n%s", pkg, err, out)
				return
			}
		}
	})
	return upstreamErr
}

// BuildPlugin builds tapbridge-cni (with the given build tags) into dir
// and returns its path.
func BuildPlugin(dir string, tags string) (string, error) {
	return build(dir, "tapbridge-cni", tags)
}

// BuildAgent builds tapbridge-agent into dir and returns its path.
func BuildAgent(dir string) (string, error) {
	return build(dir, "tapbridge-agent", "")
}

// BuildIPAM builds tapbridge-ipam into dir and returns its path.
func BuildIPAM(dir string) (string, error) {
	return build(dir, "tapbridge-ipam", "")
}

func build(dir, binary, tags string) (string, error) {
	out := filepath.Join(dir, binary)
	args := []string{"build", "-o", out}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.Command("go", append(args, "./cmd/"+binary)...)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", binary, err, b)
	}
	return out, nil
}

// CNIToolVersions are the cnitool builds the caller tests run: on libcni
// v1.1.2, containerd 1.7's (1.6 has v1.1.1, which reads configs the same
// way: both predate CNI 1.1 and read only a conflist's cniVersion) and on the project's own libcni (which reads
// cniVersions and runs GC and STATUS).
var CNIToolVersions = []string{"v1.1.2", "v1.3.0"}

// CNITool is the path of cnitool at version v, `go install`ed on first use
// (install-deps.sh installs them too).
func CNITool(v string) (string, error) {
	dir := filepath.Join(RepoRoot(), "build", "cnitool", v)
	path := filepath.Join(dir, "cnitool")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	pkg := "github.com/containernetworking/cni/cnitool@" + v
	cmd := exec.Command("go", "install", pkg)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s: %w\n%s", pkg, err, out)
	}
	return path, nil
}
