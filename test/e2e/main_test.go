// Package e2e proves the flat L2 with real guests: a simulated cluster
// (package cluster) of nodes joined by a switch, pods attached through
// libcni with the conflists of conf/, and QEMU guests (package guest) on
// the pods' TAPs probing each other and the nodes with ICMP and TCP. It
// needs root.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/e2e/guest"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

var (
	pluginPath string      // the release build of tapbridge-cni
	image      guest.Image // the guest kernel and initramfs
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("e2e tests need root (network namespaces, TAP devices, QEMU as uid 107): run `make e2e` as root")
		os.Exit(1)
	}
	code, err := setUp(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "set up:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setUp(m *testing.M) (int, error) {
	tmp, err := os.MkdirTemp("", "tapbridge-e2e-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(tmp)
	if pluginPath, err = harness.BuildPlugin(filepath.Join(tmp, "bin"), ""); err != nil {
		return 1, err
	}
	if err := harness.EnsureUpstream(); err != nil {
		return 1, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if image, err = guest.EnsureImage(ctx, ""); err != nil {
		return 1, err
	}
	return m.Run(), nil
}
