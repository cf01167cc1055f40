// Command pause is the sandbox's first process in the CRI tests: it
// holds the pod's namespaces and waits to be stopped, reaping any orphan
// the kernel hands it as the PID 1 of the pod. The tests pack it into an
// image themselves: no registry is reachable from the test machines.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		reapOrphans()
	}
}

func reapOrphans() {
	for {
		var ws syscall.WaitStatus
		if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
			return
		}
	}
}
