package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Files lists every file below dir as "mode contents" by its path
// relative to dir: what a test compares of a store (host-local's, say)
// between two runs or two calls.
func Files(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		rel, _ := filepath.Rel(dir, path)
		out[rel] = fmt.Sprintf("%s %q", info.Mode(), b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
