package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tapbridge/tapbridge-cni/internal/redirect"
	"github.com/tapbridge/tapbridge-cni/internal/state"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// probeFailpoint stops the kernel check right before it makes its
// scratch netns: a STATUS that passes with it set made no netns.
const probeFailpoint = "TAPBRIDGE_FAILPOINT=kernel-probe:error"

// A10, continued: STATUS probes the kernel (a throwaway netns) once per
// boot. A pass is kept under the boot ID; a failure is not; a kept pass
// of another boot is probed again.
func TestStatusProbesOncePerBoot(t *testing.T) {
	f := newFixture(t)
	key, err := redirect.CheckKey()
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(f.stateDir())
	if err != nil {
		t.Fatal(err)
	}
	status := func(env ...string) harness.Outcome {
		return f.exec(harness.Call{Command: "STATUS", Stdin: f.conf("1.1.0"), Extra: env, Binary: failpointsBin()})
	}
	probed := func(what string, out harness.Outcome) {
		t.Helper()
		if out.RC == 0 || out.Err.Code != 50 || !strings.Contains(out.Err.Msg, "kernel-probe") {
			t.Fatalf("%s: rc %d %s, want 50 from the probe", what, out.RC, out.Stdout)
		}
	}
	probed("first STATUS", status(probeFailpoint))
	if st.KernelCheck(key) {
		t.Fatal("a failed kernel check was kept")
	}
	if out := status(); out.RC != 0 {
		t.Fatalf("STATUS after a failed probe: rc %d %s (a failure must not be kept)", out.RC, out.Stdout)
	}
	if !st.KernelCheck(key) {
		t.Fatal("a passed kernel check was not kept")
	}
	if out := status(probeFailpoint); out.RC != 0 {
		t.Fatalf("second STATUS of this boot: rc %d %s, want 0 without a probe", out.RC, out.Stdout)
	}
	if err := st.SaveKernelCheck(otherBoot(t, key)); err != nil {
		t.Fatal(err)
	}
	probed("STATUS with a check kept by another boot", status(probeFailpoint))
	if out := status(); out.RC != 0 || !st.KernelCheck(key) {
		t.Fatalf("STATUS after a reboot: rc %d %s, kept %v", out.RC, out.Stdout, st.KernelCheck(key))
	}
}

// otherBoot is key with the boot ID of another boot.
func otherBoot(t *testing.T, key string) string {
	t.Helper()
	id, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	this := strings.TrimSpace(string(id))
	if !strings.Contains(key, this) {
		t.Fatalf("kernel check key %q does not hold the boot ID %s", key, this)
	}
	return strings.Replace(key, this, "00000000-0000-0000-0000-000000000000", 1)
}

// The same, seen by the kernel: strace counts the netns the release
// binary makes. The first STATUS of a boot makes one, the next none.
func TestStatusNetnsCount(t *testing.T) {
	tracer, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace is not installed: TestStatusProbesOncePerBoot shows the same through a failpoint")
	}
	f := newFixture(t)
	log := filepath.Join(t.TempDir(), "strace")
	wrapper := filepath.Join(t.TempDir(), "tapbridge-cni")
	script := fmt.Sprintf("#!/bin/sh\nexec %s -f -qq -e trace=unshare,setns -o %s %s\n", tracer, log, releaseBin())
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{1, 0} {
		out := f.exec(harness.Call{Command: "STATUS", Stdin: f.conf("1.1.0"), Binary: wrapper,
			Path: strings.Join(f.paths(pluginDir), ":")})
		if out.RC != 0 {
			t.Fatalf("STATUS #%d: rc %d %s", i+1, out.RC, out.Stdout)
		}
		trace, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Count(string(trace), "CLONE_NEWNET"); got != want {
			t.Errorf("STATUS #%d made %d network namespaces, want %d; strace:\n%s", i+1, got, want, trace)
		}
	}
}
