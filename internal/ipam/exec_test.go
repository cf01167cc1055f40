package ipam

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
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
