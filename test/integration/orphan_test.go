package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// A runtime that kills an ADD (its own timeout) sends DEL at once, while
// the IPAM plugin that ADD started may still be allocating. The DEL must
// wait for it: released before the allocation, the address would stay
// allocated for good. Here the IPAM ADD is held until DEL is seen queued
// on the attachment's lock; then it allocates, and DEL releases it.
func TestDelWaitsForTheIPAMOfAKilledAdd(t *testing.T) {
	f := newFixture(t)
	pod := f.pods(1)[0]
	gateDir := t.TempDir()
	gate := filepath.Join(gateDir, "go")
	started := filepath.Join(t.TempDir(), "started")
	stub := stubIPAM(t, "gated-host-local", fmt.Sprintf(`if [ "$CNI_COMMAND" = ADD ]; then
  touch %s
  while [ ! -e %s ]; do
    [ -d %s ] || exit 1 # the test is over
    sleep 0.01
  done
fi
exec %s "$@"
`, started, gate, gateDir, filepath.Join(harness.CNIBinDir(), "host-local")))
	conf := f.conf("1.1.0", set("ipam.type", "gated-host-local"))
	path := strings.Join(append([]string{stub}, f.paths(pluginDir)...), ":")
	a := harness.Attachment{CID: "orphan-" + f.node.ID, IfName: "net1", Network: "vmnet", Bridge: harness.BridgeName, HostAddr: "10.77.0.250/24", Pod: pod}
	call := harness.Call{ContainerID: a.CID, Netns: pod.Path(), IfName: a.IfName, Stdin: conf, Path: path}
	before := f.snapshot()

	add := call
	add.Command = "ADD"
	p, err := f.start(add)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the IPAM ADD did not start: stdout %q stderr %q", p.Stdout.Bytes(), p.Stderr.Bytes())
		}
	}
	if killed, err := p.Kill(); err != nil || !killed {
		t.Fatalf("kill ADD while its IPAM runs: killed=%v %v", killed, err)
	}

	del := call
	del.Command = "DEL"
	d, err := f.start(del)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WaitBlockedInFlock(10 * time.Second); err != nil {
		t.Fatalf("DEL did not wait for the killed ADD's IPAM plugin: %v", err)
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if rc, err := d.Wait(30 * time.Second); err != nil || rc != 0 {
		t.Fatalf("DEL: rc %d %v, stdout %q stderr %q", rc, err, d.Stdout.Bytes(), d.Stderr.Bytes())
	}
	if err := harness.WaitContainerGone(a.CID, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	f.expectLive(nil, []harness.Netns{pod})
	f.expectClean(before)
}
