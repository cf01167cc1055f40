package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The kernel check STATUS runs makes a throwaway netns, and runtimes call
// STATUS periodically: a check that passed is kept, relative to dataDir,
// in
//
//	kernel-check   the key it passed under ("<key>\n")
//
// The key is the caller's: it must change with whatever may change the
// answer (the boot ID, since a reboot may bring another kernel or other
// modules). Only a pass is kept, so a failed check runs again at the next
// call and a fixed kernel is seen at once.

func kernelCheckPath(dir string) string { return filepath.Join(dir, "kernel-check") }

// KernelCheckPath is where the kept kernel check lives, for the tools that
// walk dataDir: it is a fact about the node, not a trace of an attachment.
func KernelCheckPath(dir string) string { return kernelCheckPath(dir) }

// KernelCheck reports whether a kernel check passed under key (as kept by
// SaveKernelCheck). Anything unreadable counts as no: the check runs again.
func (s *Store) KernelCheck(key string) bool {
	data, err := os.ReadFile(kernelCheckPath(s.Dir))
	return err == nil && key != "" && string(data) == key+"\n"
}

// SaveKernelCheck keeps a passed kernel check under key, replacing any
// other. The file appears whole (a rename), but is not synced: a check
// lost to a power loss only runs again.
func (s *Store) SaveKernelCheck(key string) error {
	if key == "" || strings.ContainsAny(key, "\n") {
		return fmt.Errorf("keep kernel check: bad key %q", key)
	}
	f, err := os.CreateTemp(s.Dir, ".kernel-check-*")
	if err != nil {
		return fmt.Errorf("keep kernel check: %w", err)
	}
	_, err = f.WriteString(key + "\n")
	err = errors.Join(err, f.Close())
	if err == nil {
		err = os.Rename(f.Name(), kernelCheckPath(s.Dir))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("keep kernel check: %w", err)
	}
	return nil
}
