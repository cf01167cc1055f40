package ipam

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// An IPAM plugin that leaves a child holding its stdout open (here a
// shell's sleep) must not hold ADD past the timeout: the whole process
// group is killed and ADD returns ErrTimeout.
func TestTimeoutKillsTheIPAMsChildren(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\nsleep 60 &\nwait\n"
	if err := os.WriteFile(filepath.Join(dir, "hung"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	p := Plugin{Type: "hung", Config: []byte(`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"hung"}}`), Path: dir, Timeout: 300 * time.Millisecond}
	start := time.Now()
	_, err := p.Add(context.Background(), Call{ContainerID: "c", IfName: "eth0", Netns: "/proc/self/ns/net"})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Add: %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Add returned after %s with a 300ms timeout", d)
	}
}

// The IPAM plugin reads its config from stdin from the first byte: cat as
// the "plugin" echoes back exactly what it was given.
func TestPluginGetsItsConfigOnStdin(t *testing.T) {
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Skip("no cat:", err)
	}
	conf := []byte(`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"cat"}}`)
	out, err := (&execer{}).ExecPlugin(context.Background(), cat, conf, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, conf) {
		t.Fatalf("the plugin read %q, want %q", out, conf)
	}
}

// A binary that is being written (ETXTBSY at exec, as during an upgrade
// that replaces it in place) is tried again until the writer is done.
func TestExecRetriesABusyBinary(t *testing.T) {
	path, writer := busyPlugin(t)
	busy := 0
	onBusy = func() {
		if busy++; busy == 2 {
			writer.Close() // the upgrade finishes after two busy tries
		}
	}
	t.Cleanup(func() { onBusy = func() {} })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := (&execer{}).ExecPlugin(ctx, path, []byte("{}"), os.Environ())
	if err != nil {
		t.Fatalf("exec after the binary was written: %v", err)
	}
	if busy < 2 || string(out) != "ok\n" {
		t.Fatalf("got %q after %d busy tries, want \"ok\\n\" after 2", out, busy)
	}
}

// A binary still busy when the call's timeout ends fails the call with
// the cause in the message, instead of waiting on.
func TestExecGivesUpOnABusyBinaryAtTheTimeout(t *testing.T) {
	path, _ := busyPlugin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := (&execer{}).ExecPlugin(ctx, path, []byte("{}"), os.Environ())
	if err == nil || !strings.Contains(err.Error(), "text file busy") {
		t.Fatalf("exec of a binary held open for writing: %v, want a text-file-busy error", err)
	}
}

// busyPlugin writes a plugin script and keeps it open for writing, so
// exec'ing it fails with ETXTBSY until the returned file is closed.
func busyPlugin(t *testing.T) (string, *os.File) {
	path := filepath.Join(t.TempDir(), "busy")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.WriteString("#!/bin/sh\necho ok\n"); err != nil {
		t.Fatal(err)
	}
	return path, f
}

// A plugin that cannot be started at all (not executable) fails at once,
// as a CNI error that says why, like one that ran and failed.
func TestExecOfAnUnstartablePlugin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "not-executable")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := (&execer{}).ExecPlugin(context.Background(), path, []byte("{}"), os.Environ())
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || !strings.Contains(cniErr.Msg, "permission denied") {
		t.Fatalf("exec of a file that is not executable: %v, want a CNI error naming the cause", err)
	}
}
