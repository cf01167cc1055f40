package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Recorder is an IPAM plugin that logs every call, then runs host-local:
// it proves that DEL and GC really reached IPAM.
type Recorder struct {
	Dir string // holds the "recorder" plugin; add it to CNI_PATH
	Log string
}

// NewRecorder writes the recorder plugin into dir.
func NewRecorder(dir string) (*Recorder, error) {
	r := &Recorder{Dir: dir, Log: filepath.Join(dir, "calls.log")}
	script := fmt.Sprintf(`#!/bin/sh
stdin=$(cat)
printf '%%s %%s %%s %%s\n' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_IFNAME" "$(printf '%%s' "$stdin" | tr -d '\n' | grep -o '"cni.dev/valid-attachments":[^]]*]' | head -1)" >> %s
printf '%%s' "$stdin" | exec %s
`, r.Log, filepath.Join(CNIBinDir(), "host-local"))
	if err := os.WriteFile(filepath.Join(dir, "recorder"), []byte(script), 0o755); err != nil {
		return nil, fmt.Errorf("write recorder: %w", err)
	}
	return r, nil
}

// Calls lists the logged calls, one "COMMAND CONTAINERID IFNAME [list]" each.
func (r *Recorder) Calls() []string {
	b, _ := os.ReadFile(r.Log)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}
