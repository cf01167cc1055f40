// Package e2e proves the flat L2 with real guests: a simulated cluster
// (package cluster) of nodes joined by a switch, pods attached through
// libcni with the conflists of conf/, and QEMU guests (package guest) on
// the pods' TAPs probing each other and the nodes with ICMP and TCP. It
// needs root.
package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

var (
	pluginPath string      // the release build of tapbridge-cni
	agentPath  string      // tapbridge-agent, which every node runs
	image      guest.Image // the guest kernel and initramfs
)

func TestMain(m *testing.M) {
	harness.Main(m, "e2e tests (TAP devices, QEMU as uid 107)", func(tmp string) error {
		var err error
		if pluginPath, err = harness.BuildPlugin(filepath.Join(tmp, "bin"), ""); err != nil {
			return err
		}
		// Beside the plugin, so in the nodes' CNI_PATH (cluster.StartAPI).
		if _, err = harness.BuildIPAM(filepath.Join(tmp, "bin")); err != nil {
			return err
		}
		if agentPath, err = harness.BuildAgent(filepath.Join(tmp, "agent")); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		image, err = guest.EnsureImage(ctx, "")
		return err
	})
}
