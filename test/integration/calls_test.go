package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

func releaseBin() string    { return filepath.Join(pluginDir, "tapbridge-cni") }
func failpointsBin() string { return filepath.Join(failpointsDir, "tapbridge-cni") }

// fill sets the binary (the release build unless given) and CNI_PATH.
func (f *fixture) fill(c harness.Call) harness.Call {
	if c.Binary == "" {
		c.Binary = releaseBin()
	}
	if c.Path == "" {
		c.Path = strings.Join(f.paths(filepath.Dir(c.Binary)), ":")
	}
	return c
}

// call runs c in the node's host netns and checks the protocol. Safe
// from any goroutine.
func (f *fixture) call(c harness.Call) (harness.Outcome, error) {
	c = f.fill(c)
	var out harness.Outcome
	err := f.node.Host.Do(func() error {
		var err error
		out, err = c.Run()
		return err
	})
	if err != nil {
		return out, fmt.Errorf("%s %s/%s: %w (stderr: %s)", c.Command, c.ContainerID, c.IfName, err, out.Stderr)
	}
	return out, nil
}

// exec is call for the test goroutine: a protocol violation is fatal.
func (f *fixture) exec(c harness.Call) harness.Outcome {
	f.t.Helper()
	out, err := f.call(c)
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// must fails the test unless the call returned rc 0.
func (f *fixture) must(out harness.Outcome, err error) harness.Outcome {
	f.t.Helper()
	if err := succeeded(out, err); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// start launches c in the node's host netns and returns at once
// (harness.Call.Start).
func (f *fixture) start(c harness.Call, env ...string) (*harness.Proc, error) {
	c = f.fill(c)
	var p *harness.Proc
	err := f.node.Host.Do(func() (err error) {
		p, err = c.Start(env...)
		return err
	})
	if err == nil {
		// A test that fails before it reaps the plugin must not leave it
		// running while the node is torn down.
		f.t.Cleanup(func() {
			if p.Cmd.ProcessState == nil {
				_ = p.Cmd.Process.Kill()
				_ = p.Cmd.Wait()
			}
		})
	}
	return p, err
}

// add, del and check run one verb of the release binary for a.
func (f *fixture) add(conf []byte, a harness.Attachment, extra ...string) (harness.Outcome, error) {
	return f.call(harness.Call{Command: "ADD", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Stdin: conf, Extra: extra})
}

func (f *fixture) del(conf []byte, a harness.Attachment) (harness.Outcome, error) {
	return f.call(harness.Call{Command: "DEL", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Stdin: conf})
}

func (f *fixture) check(conf, prev []byte, a harness.Attachment) (harness.Outcome, error) {
	return f.call(harness.Call{Command: "CHECK", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Stdin: f.withPrev(conf, prev)})
}

// succeeded turns an outcome into an error unless it is rc 0.
func succeeded(out harness.Outcome, err error) error {
	if err != nil {
		return err
	}
	if out.RC != 0 {
		return fmt.Errorf("rc %d: %s", out.RC, out.Stdout)
	}
	return nil
}

// inParallel runs fn(0..n-1) in n goroutines released at once and
// returns their errors, indexed.
func inParallel(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(n)
	done.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			errs[i] = fn(i)
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	return errs
}

// failOn reports every failed call, at most 10, and stops the test.
func failOn(t *testing.T, what string, errs []error) {
	t.Helper()
	failed := 0
	for i, err := range errs {
		if err != nil {
			if failed < 10 {
				t.Errorf("%s #%d: %v", what, i, err)
			}
			failed++
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d %s calls failed", failed, len(errs), what)
	}
}

// containerIDs returns n container IDs with a common prefix.
func containerIDs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return out
}

// resultIP returns the first IP of an ADD's stdout.
func resultIP(t *testing.T, stdout []byte) string {
	t.Helper()
	var res struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(stdout, &res); err != nil || len(res.IPs) == 0 {
		t.Fatalf("ADD result without IPs (%v): %s", err, stdout)
	}
	return res.IPs[0].Address
}

// decodeCNIError decodes the one JSON document on stdout (json.Unmarshal
// refuses a second one) as a CNI error.
func decodeCNIError(stdout []byte, e *types.Error) error {
	if err := json.Unmarshal(stdout, e); err != nil {
		return err
	}
	if e.Code == 0 || e.Msg == "" {
		return fmt.Errorf("not a CNI error with code and message: %q", stdout)
	}
	return nil
}

// stubIPAM writes an IPAM plugin script called name into a new directory
// and returns the directory (to put first in CNI_PATH).
func stubIPAM(t *testing.T, name, script string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
