package cri

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// The versions the tier runs, as scripts/deps/cri.sh installs them under
// build/cri: Debian's containerd and runc (unpacked from the packages),
// containerd 2.x and crictl from the module proxy.
const (
	crictlVersion      = "v1.37.0"
	containerd2Version = "v2.4.2"
)

func buildCRIDir() string    { return filepath.Join(harness.RepoRoot(), "build", "cri") }
func debianDir() string      { return filepath.Join(buildCRIDir(), "debian") }
func containerd2Dir() string { return filepath.Join(buildCRIDir(), "containerd-"+containerd2Version) }
func crictlPath() string     { return filepath.Join(buildCRIDir(), "crictl") }

// runcDir holds Debian's runc, which both flavors run.
func runcDir() string { return filepath.Join(debianDir(), "usr", "sbin") }

// flavor is one containerd the tier runs: where its binaries are
// (containerd, containerd-shim-runc-v2, ctr), its config, and the
// cniVersion its libcni takes from the project's conflist
// ("cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"]).
type flavor struct {
	name       string
	binDir     string
	config     string // text/template: .Dir .Sock .BinDir .ConfDir .Image .Runc
	cniVersion string
}

func flavors() []flavor {
	return []flavor{
		{
			name: "containerd 1.6 (Debian)", binDir: filepath.Join(debianDir(), "usr", "bin"),
			config: config16, cniVersion: "1.0.0", // libcni v1.1.1 reads only cniVersion
		},
		{
			name: "containerd " + containerd2Version, binDir: containerd2Dir(),
			config: config2, cniVersion: "1.1.0", // libcni v1.3.1 takes the highest of cniVersions
		},
	}
}

// ensureTools runs scripts/deps/cri.sh (as `make test` does before any
// test) when something the tier runs is missing, and says what is still
// missing after it.
func ensureTools() error {
	need := []string{crictlPath(), filepath.Join(runcDir(), "runc"), filepath.Join(harness.CNIBinDir(), "loopback")}
	for _, fl := range flavors() {
		for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr"} {
			need = append(need, filepath.Join(fl.binDir, b))
		}
	}
	if missing(need) == nil {
		return nil
	}
	cmd := exec.Command(filepath.Join(harness.RepoRoot(), "scripts", "deps", "cri.sh"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("scripts/deps/cri.sh: %w\n%s", err, out)
	}
	if m := missing(need); m != nil {
		return fmt.Errorf("missing after scripts/deps/cri.sh: %v", m)
	}
	return nil
}

func missing(paths []string) []string {
	var m []string
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			m = append(m, p)
		}
	}
	return m
}

// config16 is containerd 1.6's config (version 2): everything it keeps
// under the test's dir; the CRI with the pause image, the CNI dirs, runc
// by path, and restrict_oom_score_adj: the CRI gives a sandbox
// oom_score_adj -998, and lowering it needs CAP_SYS_RESOURCE, which this
// machine's bounding set lacks (runc then fails with "can't get final
// child's PID from pipe: EOF"); restricted, the sandbox keeps containerd's.
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
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{{.Runc}}"
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
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{{.Runc}}"
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["{{.BinDir}}"]
      conf_dir = "{{.ConfDir}}"
      max_conf_num = 1
`
