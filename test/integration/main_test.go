// Package integration runs the built plugin against sandbox nodes made of
// network namespaces, through libcni and by direct exec, and checks the
// kernel state it leaves. It needs root.
package integration

import (
	"path/filepath"
	"testing"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

var (
	pluginDir     string // holds tapbridge-cni (release build)
	failpointsDir string // holds tapbridge-cni built with -tags failpoints
	agentBin      string // tapbridge-agent
)

func TestMain(m *testing.M) {
	harness.Main(m, "integration tests", func(tmp string) error {
		pluginDir, failpointsDir = filepath.Join(tmp, "release"), filepath.Join(tmp, "failpoints")
		if _, err := harness.BuildPlugin(pluginDir, ""); err != nil {
			return err
		}
		if _, err := harness.BuildPlugin(failpointsDir, "failpoints"); err != nil {
			return err
		}
		var err error
		agentBin, err = harness.BuildAgent(filepath.Join(tmp, "agent"))
		return err
	})
}
