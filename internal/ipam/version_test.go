package ipam

import (
	"debug/buildinfo"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const upstreamModule = "github.com/containernetworking/plugins"

// The upstream version is pinned in one place, go.mod: the in-process
// host-local and static are built from it, and the binaries the tests
// compare them with (and that ipamExec runs in CI) must be that version.
func TestUpstreamBinariesAreThePinnedVersion(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Version}}", upstreamModule)
	cmd.Dir = filepath.Dir(file)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", upstreamModule, err)
	}
	pinned := strings.TrimSpace(string(out))
	bin := upstreamBin(t)
	for _, name := range []string{"host-local", "static"} {
		bi, err := buildinfo.ReadFile(filepath.Join(bin, name))
		if err != nil {
			t.Fatal(err)
		}
		if bi.Main.Path != upstreamModule || bi.Main.Version != pinned {
			t.Errorf("%s is %s@%s, go.mod pins %s@%s: run scripts/install-deps.sh", name, bi.Main.Path, bi.Main.Version, upstreamModule, pinned)
		}
	}
}

// install-deps.sh takes the version from go.mod rather than naming one.
func TestInstallDepsReadsThePin(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "scripts", "install-deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if !strings.Contains(s, "go list -m -f '{{.Version}}' "+upstreamModule) || strings.Contains(s, "plugins/$p@v") {
		t.Error("scripts/install-deps.sh must install the plugins at the version go.mod pins (go list -m), not a version of its own")
	}
}
