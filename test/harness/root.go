package harness

import (
	"os"
	"testing"
)

// RequireRoot skips a test that needs root, and says why.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, TAP devices and nftables tables, and runs guests as uid 107")
	}
}
