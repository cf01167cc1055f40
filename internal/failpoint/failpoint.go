//go:build !failpoints

// Package failpoint lets crash tests stop an ADD after any step. The
// release binary is built without the "failpoints" tag, and then Hit is an
// empty function the compiler removes.
package failpoint

// Enabled reports whether this binary was built with failpoints.
const Enabled = false

// Hit is a no-op in release builds.
func Hit(string) error { return nil }
