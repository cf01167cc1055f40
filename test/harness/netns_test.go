package harness

import (
	"runtime"
	"testing"
)

// A function that ends its goroutine instead of returning (a t.Fatal
// inside Do) makes Do fail rather than hang the test for good.
func TestDoSurvivesGoexit(t *testing.T) {
	RequireRoot(t)
	n, err := NewNetns(RunID("tbh"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Delete(); err != nil {
			t.Error(err)
		}
	})
	if err := n.Do(func() error { runtime.Goexit(); return nil }); err == nil {
		t.Fatal("Do returned nil for a function that never returned")
	}
	if err := n.Do(func() error { return nil }); err != nil {
		t.Fatalf("Do after that: %v", err)
	}
}

// A zero Netns was never made: deleting it touches nothing (its path is
// NetnsDir itself, where every netns is mounted).
func TestDeleteOfZeroNetns(t *testing.T) {
	if err := (Netns{}).Delete(); err != nil {
		t.Fatal(err)
	}
}
