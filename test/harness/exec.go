package harness

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/containernetworking/cni/pkg/types"
)

// Call is one direct exec of a plugin binary, as a runtime does it.
type Call struct {
	Binary      string
	Command     string
	ContainerID string
	Netns       string
	IfName      string
	Args        string
	Path        string
	Extra       []string // more KEY=VALUE, e.g. a failpoint
	Stdin       []byte
}

// Outcome is what the plugin did, checked against the protocol.
type Outcome struct {
	RC     int
	Stdout []byte
	Stderr []byte
	Err    *types.Error // decoded when RC != 0
}

// Env is the environment a runtime gives the plugin for c.
func (c Call) Env() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "CNI_COMMAND=" + c.Command, "CNI_PATH=" + c.Path}
	add := func(k, v string) {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	add("CNI_CONTAINERID", c.ContainerID)
	add("CNI_NETNS", c.Netns)
	add("CNI_IFNAME", c.IfName)
	add("CNI_ARGS", c.Args)
	return append(env, c.Extra...)
}

// Run execs the plugin in the calling thread's netns and checks the
// protocol: rc 0 iff success, stdout exactly one JSON document (or empty
// for a successful DEL/CHECK/GC/STATUS), a coded error with a message on
// failure.
func (c Call) Run() (Outcome, error) {
	cmd := exec.Command(c.Binary)
	cmd.Env = c.Env()
	cmd.Stdin = bytes.NewReader(c.Stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	o := Outcome{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		o.RC = exitErr.ExitCode()
	case err != nil:
		return o, fmt.Errorf("exec %s: %w", c.Binary, err)
	}
	return o, o.checkProtocol(c.Command)
}

func (o *Outcome) checkProtocol(command string) error {
	docs, err := countJSON(o.Stdout)
	if err != nil {
		return fmt.Errorf("stdout is not JSON (%w): %q", err, o.Stdout)
	}
	if o.RC == 0 {
		if docs > 1 || (docs == 0 && (command == "ADD" || command == "VERSION")) {
			return fmt.Errorf("rc 0 with %d JSON documents on stdout: %q", docs, o.Stdout)
		}
		return nil
	}
	if docs != 1 {
		return fmt.Errorf("rc %d with %d JSON documents on stdout: %q", o.RC, docs, o.Stdout)
	}
	o.Err = &types.Error{}
	if err := json.Unmarshal(o.Stdout, o.Err); err != nil || o.Err.Code == 0 || o.Err.Msg == "" {
		return fmt.Errorf("rc %d without a coded error with a message: %q", o.RC, o.Stdout)
	}
	return nil
}

func countJSON(b []byte) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	n := 0
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}
