package kube

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// MultusVersion is the Multus release the Multus tests run
// (test/tools/multus pins it; scripts/deps/multus.sh builds it).
const MultusVersion = "v4.2.2"

// MultusBin is a binary of build/multus: multus (thin), multus-daemon,
// multus-shim, or the loopback plugin the tests use as cluster network.
func MultusBin(name string) string {
	return filepath.Join(harness.RepoRoot(), "build", "multus", name)
}

// MultusBinaries checks that scripts/deps/multus.sh built every binary,
// of the pinned version.
func MultusBinaries() error {
	for _, b := range []string{"multus", "multus-daemon", "multus-shim", "loopback"} {
		if _, err := os.Stat(MultusBin(b)); err != nil {
			return fmt.Errorf("%s is missing: run scripts/deps/multus.sh (make deps) to build it", MultusBin(b))
		}
	}
	v, err := os.ReadFile(MultusBin("multus.version"))
	if err != nil || string(v) != MultusVersion+"\n" {
		return fmt.Errorf("build/multus holds Multus %q, want %s: run scripts/deps/multus.sh", v, MultusVersion)
	}
	return nil
}
