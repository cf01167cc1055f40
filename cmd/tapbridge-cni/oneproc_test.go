package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestOneProcBeforeAnyAllocation builds the plugin as the Makefile does and
// reads its init trace: GOMAXPROCS(1) must run before any package's init
// has allocated, or a P holding that memory can be destroyed with it (see
// package oneproc). An import that sorts before it and allocates, or a
// rename that sorts it later, fails here.
func TestOneProcBeforeAnyAllocation(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "tapbridge-cni")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := exec.Command(bin)
	run.Env = []string{"GODEBUG=inittrace=1", "CNI_COMMAND=VERSION"}
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("VERSION: %v\n%s", err, out)
	}
	line := regexp.MustCompile(`^init (\S+) @.* (\d+) allocs$`)
	var before []string
	for _, l := range strings.Split(string(out), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		if strings.HasSuffix(m[1], "/internal/oneproc") {
			return
		}
		if m[2] != "0" {
			before = append(before, m[1]+" ("+m[2]+" allocs)")
		}
	}
	if before != nil {
		t.Fatalf("inits that allocated before oneproc's GOMAXPROCS(1): %v\ntrace:\n%s", before, out)
	}
	t.Fatalf("no init trace line for oneproc: is it still imported by main?\n%s", out)
}
