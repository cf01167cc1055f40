package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// registry remembers every namespace and directory the benchmark makes,
// and every long-running process it starts (the node agent), so that they
// go whatever happens: normal end, error, or a signal.
type registry struct {
	mu     sync.Mutex
	netns  map[string]harness.Netns
	order  []string
	dirs   []string
	stops  []func() error // each ends one process; safe to call twice
	closed bool
}

func newRegistry() *registry { return &registry{netns: map[string]harness.Netns{}} }

var errClosed = errors.New("benchmark is stopping")

// newNetns records the name before creating the namespace: a signal that
// lands in between still finds it.
func (r *registry) newNetns(name string) (harness.Netns, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return harness.Netns{}, errClosed
	}
	r.netns[name] = harness.Netns{Name: name}
	r.order = append(r.order, name)
	r.mu.Unlock()
	return harness.NewNetns(name)
}

// drop deletes namespaces now (a data-plane layout is done with them).
func (r *registry) drop(nss ...harness.Netns) error {
	var errs []error
	for _, n := range nss {
		r.mu.Lock()
		delete(r.netns, n.Name)
		r.mu.Unlock()
		errs = append(errs, n.Delete())
	}
	return errors.Join(errs...)
}

func (r *registry) tempDir(base, pattern string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return "", errClosed
	}
	d, err := os.MkdirTemp(base, pattern)
	if err == nil {
		r.dirs = append(r.dirs, d)
	}
	return d, err
}

// onCleanup has stop run by cleanup, before any namespace goes: a
// process left in a deleted netns would keep it alive. When the registry
// is already closed, stop runs now.
func (r *registry) onCleanup(stop func() error) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return errors.Join(errClosed, stop())
	}
	r.stops = append(r.stops, stop)
	r.mu.Unlock()
	return nil
}

// cleanup removes everything, newest first; safe to call more than once
// and from the signal handler while the benchmark is still running.
func (r *registry) cleanup() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	var errs []error
	for i := len(r.stops) - 1; i >= 0; i-- {
		errs = append(errs, r.stops[i]())
	}
	r.stops = nil
	left := 0
	for i := len(r.order) - 1; i >= 0; i-- {
		n, ok := r.netns[r.order[i]]
		if !ok {
			continue
		}
		if err := n.Delete(); err != nil {
			errs = append(errs, err)
			left++
			continue
		}
		delete(r.netns, n.Name)
	}
	r.order = nil
	for _, d := range r.dirs {
		errs = append(errs, os.RemoveAll(d))
	}
	r.dirs = nil
	if left > 0 {
		errs = append(errs, fmt.Errorf("%d namespaces could not be removed", left))
	}
	return errors.Join(errs...)
}

// handleSignals cancels the run on SIGINT/SIGTERM/SIGHUP and gives it a
// few seconds to unwind through its own cleanup; a second signal, or a run
// that does not stop, gets the cleanup done here before exiting.
func handleSignals(cancel func(), r *registry) {
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigc
		fmt.Fprintf(os.Stderr, "\nbench: %v: stopping and removing the namespaces\n", s)
		cancel()
		select {
		case <-sigc:
		case <-time.After(15 * time.Second):
		}
		if err := r.cleanup(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: cleanup:", err)
		}
		os.Exit(130)
	}()
}

// inNS runs fn on a thread inside n (harness.Netns.Do). A panic becomes an
// error, so that main's cleanup still runs.
func inNS(n harness.Netns, fn func() error) error {
	return n.Do(func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic in netns %s: %v\n%s", n.Name, p, debug.Stack())
			}
		}()
		return fn()
	})
}

// goSafe runs fn in a goroutine and delivers its error (or panic) on the
// returned channel.
func goSafe(fn func() error) <-chan error {
	errc := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				errc <- fmt.Errorf("panic: %v\n%s", p, debug.Stack())
			}
		}()
		errc <- fn()
	}()
	return errc
}
