package integration

import (
	"strings"
	"testing"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// Pool probes run under the bridge lock, so a pick is bounded by half of
// lockTimeout: a probeWait that cannot fit is refused with code 7 naming
// both, before anything is created.
func TestProbeWaitBeyondLockTimeout(t *testing.T) {
	f := newFixture(t)
	pod := f.pod()
	before := f.snapshot()
	conf := f.conf("1.1.0", set("lockTimeout", "1s"),
		withHost(map[string]any{"nodeName": "node-a", "pool": []string{"10.77.0.240/29"}, "probeWait": "600ms"}))
	out := f.exec(harness.Call{Command: "ADD", ContainerID: "cid-probe", Netns: pod.Path(), IfName: "eth0", Stdin: conf})
	if out.RC == 0 || out.Err.Code != 7 || !strings.Contains(out.Err.Msg, "hostAddress.probeWait") || !strings.Contains(out.Err.Msg, "lockTimeout (1s)") {
		t.Fatalf("ADD with a probe longer than half of lockTimeout: rc %d %s", out.RC, out.Stdout)
	}
	f.expectClean(before)
}
