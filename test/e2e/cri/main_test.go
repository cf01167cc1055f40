// Package cri runs the plugin under containerd's CRI, the way kubelet's
// runtime calls it: containerd (Debian's 1.6, and 2.x built from the
// module proxy) in a sandbox node's network namespace with a root, state,
// socket and config of its own, the project's conflist from conf/, a
// locally built pause image, and crictl driving a pod sandbox through
// runp, inspectp, stopp and rmp. It needs root.
package cri

import (
	"path/filepath"
	"testing"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

var (
	pluginPath string // the build of tapbridge-cni under test
	pauseTar   string // the pause image, an OCI layout tarball
)

func TestMain(m *testing.M) {
	harness.Main(m, "CRI tests (containerd in network namespaces, TAP devices)", func(tmp string) error {
		var err error
		if pluginPath, err = harness.BuildPlugin(filepath.Join(tmp, "bin"), ""); err != nil {
			return err
		}
		pauseTar, err = buildPauseImage(tmp)
		return err
	})
}
