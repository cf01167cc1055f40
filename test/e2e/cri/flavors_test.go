package cri

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// The versions the tier runs; scripts/deps/cri.sh installs the same.
const (
	crictlVersion      = "v1.37.0"
	containerd2Version = "v2.4.2"
)

// flavor is one containerd the tier runs: where its binaries are
// (containerd, containerd-shim-runc-v2, ctr), its config, and the
// cniVersion its libcni takes from the project's conflist
// ("cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"]).
type flavor struct {
	name       string
	binDir     string
	ensure     func() error // installs the binaries if they are missing
	config     string       // text/template: .Dir .Sock .BinDir .ConfDir .Image
	cniVersion string
}

func flavors() []flavor {
	return []flavor{
		{
			name: "containerd 1.6 (Debian)", binDir: "/usr/bin", ensure: debianContainerd,
			config: config16, cniVersion: "1.0.0", // libcni v1.1.1 reads only cniVersion
		},
		{
			name: "containerd " + containerd2Version, binDir: containerd2Dir(), ensure: buildContainerd2,
			config: config2, cniVersion: "1.1.0", // libcni v1.3.1 takes the highest of cniVersions
		},
	}
}

// debianContainerd checks that Debian's containerd and runc are there
// (scripts/deps/cri.sh installs them; `make test` runs it first).
func debianContainerd() error {
	for _, b := range []string{"/usr/bin/containerd", "/usr/bin/containerd-shim-runc-v2", "/usr/bin/ctr", "/usr/sbin/runc"} {
		if _, err := os.Stat(b); err != nil {
			if _, err2 := exec.LookPath(filepath.Base(b)); err2 != nil {
				return fmt.Errorf("%s is missing: run scripts/deps/cri.sh (Debian packages containerd and runc)", b)
			}
		}
	}
	return nil
}

func containerd2Dir() string {
	return filepath.Join(buildCRIDir(), "containerd-"+containerd2Version)
}

var containerd2Once sync.Once
var containerd2Err error

// buildContainerd2 builds containerd 2.x, its runc shim and ctr from the
// module proxy (static, without the btrfs, devmapper and zfs snapshotters,
// which need cgo), once, into build/.
func buildContainerd2() error {
	containerd2Once.Do(func() {
		var pkgs []string
		for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr"} {
			if _, err := os.Stat(filepath.Join(containerd2Dir(), b)); err != nil {
				pkgs = append(pkgs, "github.com/containerd/containerd/v2/cmd/"+b+"@"+containerd2Version)
			}
		}
		if len(pkgs) > 0 {
			containerd2Err = goInstall(containerd2Dir(), append([]string{"-tags", "no_btrfs,no_devmapper,no_zfs"}, pkgs...)...)
		}
	})
	return containerd2Err
}

func buildCRIDir() string { return filepath.Join(harness.RepoRoot(), "build", "cri") }

// crictlPath is crictl from the module proxy (ensureTools installs it).
func crictlPath() string { return filepath.Join(buildCRIDir(), "crictl") }

// ensureTools installs what every flavor needs if it is missing: crictl
// and the loopback plugin (scripts/deps/cri.sh installs both too).
func ensureTools() error {
	if _, err := os.Stat(crictlPath()); err != nil {
		if err := goInstall(buildCRIDir(), "sigs.k8s.io/cri-tools/cmd/crictl@"+crictlVersion); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(harness.CNIBinDir(), "loopback")); err != nil {
		return goInstall(harness.CNIBinDir(), "github.com/containernetworking/plugins/plugins/main/loopback@"+harness.UpstreamVersion)
	}
	return nil
}

func goInstall(gobin string, args ...string) error {
	cmd := exec.Command("go", append([]string{"install"}, args...)...)
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go install %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// config16 is containerd 1.6's config (version 2): everything it keeps
// under the test's dir; the CRI with the pause image, the CNI dirs, and
// restrict_oom_score_adj (the test runs containerd with the oom_score_adj
// it has, and the CRI would otherwise give the sandbox a lower one, which
// needs CAP_SYS_RESOURCE in a way this machine's sandboxes refuse).
const config16 = `version = 2
root = "{{.Dir}}/root"
state = "{{.Dir}}/state"
[grpc]
  address = "{{.Sock}}"
[ttrpc]
  address = "{{.Sock}}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{{.Dir}}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{{.Image}}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{{.BinDir}}"
    conf_dir = "{{.ConfDir}}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
`

// config2 is the same for containerd 2.x (config version 3), with NRI off
// (it would listen on /var/run/nri).
const config2 = `version = 3
root = "{{.Dir}}/root"
state = "{{.Dir}}/state"
[plugins]
  [plugins.'io.containerd.server.v1.grpc']
    address = "{{.Sock}}"
  [plugins.'io.containerd.server.v1.ttrpc']
    address = "{{.Sock}}.ttrpc"
  [plugins.'io.containerd.internal.v1.opt']
    path = "{{.Dir}}/opt"
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = "{{.Dir}}/image-verifier"
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "{{.Image}}"
  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = true
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["{{.BinDir}}"]
      conf_dir = "{{.ConfDir}}"
      max_conf_num = 1
`
