package ipam

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"
)

// waitDelay bounds the wait for the IPAM's output once it is killed.
const waitDelay = time.Second

// execer runs IPAM plugins as invoke's default does, except on timeout:
// it kills the plugin's whole process group and stops waiting for its
// output. invoke's default kills the plugin alone and then waits for its
// stdout to close, so a child the plugin left behind (a shell script's
// sleep, a helper daemon) would hang ADD long past ipamTimeout.
type execer struct {
	version.PluginDecoder
	hold *os.File // inherited by the plugin (see Call.Hold); may be nil
}

func (*execer) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (e *execer) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	for delay := busyDelay; ; delay = min(2*delay, maxBusyDelay) {
		out, err := e.execOnce(ctx, path, stdin, environ)
		if !errors.Is(err, unix.ETXTBSY) {
			return out, err
		}
		// The binary is being replaced (an upgrade writes it in place):
		// wait and try again, as the reference invoke package does, but
		// only as long as the call's own timeout allows.
		onBusy()
		select {
		case <-ctx.Done():
			return nil, pluginError(err, nil, nil)
		case <-time.After(delay):
		}
	}
}

// Back-off between tries of a binary that is busy being written.
const (
	busyDelay    = 50 * time.Millisecond
	maxBusyDelay = time.Second
)

// onBusy lets a test see each "text file busy" try.
var onBusy = func() {}

// execOnce runs the plugin once. A start that fails with ETXTBSY is
// returned as is, for ExecPlugin to try again; any other failure is a
// CNI error, as invoke reports it.
func (e *execer) execOnce(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	var in io.Reader = bytes.NewReader(stdin) // where memfds are refused (a seccomp filter)
	if f, err := memfdWith(stdin); err == nil {
		defer f.Close()
		in = f
	}
	c := exec.CommandContext(ctx, path)
	c.Env, c.Stdin, c.Stdout, c.Stderr = environ, in, &stdout, &stderr
	if e.hold != nil {
		c.ExtraFiles = []*os.File{e.hold}
	}
	// No Pdeathsig: IPAM killed with tapbridge could die between creating
	// a lease and writing whose it is (host-local does the two apart), and
	// that lease would outlive the runtime's DEL. Left to run, it finishes
	// its allocation, and the DEL that follows releases it.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return unix.Kill(-c.Process.Pid, unix.SIGKILL) }
	c.WaitDelay = waitDelay
	if err := c.Start(); err != nil {
		if errors.Is(err, unix.ETXTBSY) {
			return nil, err // ExecPlugin tries again
		}
		return nil, pluginError(err, nil, nil)
	}
	if err := c.Wait(); err != nil {
		return nil, pluginError(err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// memfdWith is an in-memory file holding b, read from its start. Given a
// file, os/exec hands the child the descriptor itself; given a reader, it
// feeds a pipe from a goroutine, which with one P (cmd/tapbridge-cni) only
// runs once the runtime takes the P back from the thread blocked waiting
// for the child, while the child waits for its config.
//
// The memfd is sealed against exec (MFD_NOEXEC_SEAL, Linux 6.3): without
// that or MFD_EXEC, those kernels log a warning per process (each call is
// one), and vm.memfd_noexec=2 refuses the call. Older kernels refuse the
// flag (EINVAL) and get a plain memfd.
func memfdWith(b []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("ipam-stdin", unix.MFD_CLOEXEC|unix.MFD_NOEXEC_SEAL)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate("ipam-stdin", unix.MFD_CLOEXEC)
	}
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "ipam-stdin")
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// pluginError is the plugin's own CNI error from stdout, or one that
// says how it failed (as invoke's default reports it).
func pluginError(err error, stdout, stderr []byte) error {
	e := &types.Error{}
	switch {
	case len(stdout) > 0:
		if perr := json.Unmarshal(stdout, e); perr != nil {
			e.Msg = fmt.Sprintf("netplugin failed but error parsing its diagnostic message %q: %v", stdout, perr)
		}
	case len(stderr) > 0:
		e.Msg = fmt.Sprintf("netplugin failed: %q", stderr)
	default:
		e.Msg = fmt.Sprintf("netplugin failed with no error message: %v", err)
	}
	return e
}
