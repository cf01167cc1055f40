package redirect

import (
	"os"
	"strings"
	"testing"
)

// The key a passed kernel check is kept under names this boot and what
// was probed: another boot, or a binary that probes more, misses it.
func TestCheckKey(t *testing.T) {
	id, err := os.ReadFile(bootIDPath)
	if err != nil {
		t.Skipf("no boot ID here (%v): CheckKey cannot work without procfs", err)
	}
	key, err := CheckKey()
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSpace(string(id)) + " " + features; key != want {
		t.Fatalf("key %q, want %q", key, want)
	}
	if again, _ := CheckKey(); again != key {
		t.Fatalf("key changed within a boot: %q then %q", key, again)
	}
}
