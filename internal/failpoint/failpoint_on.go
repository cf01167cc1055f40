//go:build failpoints

package failpoint

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// Enabled reports whether this binary was built with failpoints.
const Enabled = true

// Env names the failpoint to trigger: "<step>:error" makes Hit return an
// error, "<step>:exit" kills the process on the spot, as a crash would,
// "<step>:stop" stops it (SIGSTOP) until the test sends SIGCONT, so the
// test can change the world (stop the API server) at that very step.
const Env = "TAPBRIDGE_FAILPOINT"

var stopped bool

// Hit triggers the configured failpoint if it names step.
func Hit(step string) error {
	name, action, ok := strings.Cut(os.Getenv(Env), ":")
	if !ok || name != step {
		return nil
	}
	switch action {
	case "exit":
		os.Exit(137) // what a SIGKILL looks like to the runtime
	case "stop":
		// Once per process: a step hit again (a loop's next turn) goes on.
		if !stopped {
			stopped = true
			_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
		}
		return nil
	}
	return fmt.Errorf("failpoint %s: injected error", step)
}
