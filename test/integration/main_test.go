// Package integration runs the built plugin against sandbox nodes made of
// network namespaces, through libcni and by direct exec, and checks the
// kernel state it leaves. It needs root.
package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

var (
	pluginDir     string // holds tapbridge-cni (release build)
	failpointsDir string // holds tapbridge-cni built with -tags failpoints
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("integration tests need root (network namespaces, netlink): run `make test` as root")
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
	tmp, err := os.MkdirTemp("", "tapbridge-it-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(tmp)
	pluginDir, failpointsDir = filepath.Join(tmp, "release"), filepath.Join(tmp, "failpoints")
	if _, err := harness.BuildPlugin(pluginDir, ""); err != nil {
		return 1, err
	}
	if _, err := harness.BuildPlugin(failpointsDir, "failpoints"); err != nil {
		return 1, err
	}
	if err := harness.EnsureUpstream(); err != nil {
		return 1, err
	}
	return m.Run(), nil
}
