package state

import (
	"os"
	"testing"
)

// A kept kernel check answers for its own key only: another boot (or
// another set of probed features) is a miss, and so is nothing kept.
func TestKernelCheck(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const boot1, boot2 = "boot-1 tun u32", "boot-2 tun u32"
	if s.KernelCheck(boot1) {
		t.Fatal("a check is kept before any was saved")
	}
	if err := s.SaveKernelCheck(boot1); err != nil {
		t.Fatal(err)
	}
	if !s.KernelCheck(boot1) || s.KernelCheck(boot2) || s.KernelCheck("") || s.KernelCheck("boot-1") {
		t.Fatal("a check kept under boot-1 must answer for exactly boot-1's key")
	}
	if err := s.SaveKernelCheck(boot2); err != nil {
		t.Fatal(err)
	}
	if s.KernelCheck(boot1) || !s.KernelCheck(boot2) {
		t.Fatal("the check of a new boot must replace the old one")
	}
	for _, bad := range []string{"", "two\nlines"} {
		if err := s.SaveKernelCheck(bad); err == nil {
			t.Errorf("key %q was kept", bad)
		}
	}
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() && e.Name() != "kernel-check" {
			t.Errorf("stray file %s", e.Name())
		}
	}
}

// A kept check that cannot be read (torn by hand, a directory) is a miss.
func TestKernelCheckUnreadable(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(KernelCheckPath(s.Dir), []byte("boot-1"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s.KernelCheck("boot-1") {
		t.Fatal("a key without its newline (a torn write) was taken")
	}
	if err := os.Remove(KernelCheckPath(s.Dir)); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(KernelCheckPath(s.Dir), 0o700); err != nil {
		t.Fatal(err)
	}
	if s.KernelCheck("boot-1") {
		t.Fatal("a directory was taken for a kept check")
	}
	if err := s.SaveKernelCheck("boot-1"); err == nil {
		t.Fatal("saving over a directory succeeded")
	}
}
