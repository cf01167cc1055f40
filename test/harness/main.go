package harness

import (
	"fmt"
	"os"
	"testing"
)

// Main runs a test package that needs root: it refuses any other user with
// a message that says so, builds the fixtures with setUp in a temp dir
// (removed afterwards, with the upstream plugins installed first), and
// exits with the tests' code.
func Main(m *testing.M, what string, setUp func(tmp string) error) {
	if os.Geteuid() != 0 {
		fmt.Printf("%s need root (network namespaces, netlink): run `make test` as root\n", what)
		os.Exit(1)
	}
	os.Exit(run(m, setUp))
}

func run(m *testing.M, setUp func(tmp string) error) int {
	tmp, err := os.MkdirTemp("", "tapbridge-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "set up:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	if err := EnsureUpstream(); err != nil {
		fmt.Fprintln(os.Stderr, "set up:", err)
		return 1
	}
	if err := setUp(tmp); err != nil {
		fmt.Fprintln(os.Stderr, "set up:", err)
		return 1
	}
	return m.Run()
}
