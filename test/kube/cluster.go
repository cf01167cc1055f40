// Package kube runs a real Kubernetes API server for tests: etcd (Debian's
// etcd-server) and kube-apiserver (built from k8s.io/kubernetes into
// build/kube by scripts/deps/kube.sh) in a network namespace of their own,
// with a fresh data dir, certificates and service-account key per cluster.
// Simulated nodes are further netns joined to it by veths (JoinNode); the
// test process talks to it through sockets opened in its netns (Dial).
// Both processes are killed by PID when the cluster is closed.
package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// Version is the Kubernetes release the tier runs (test/tools/kube pins it).
const Version = "v1.37.2"

// Port is the API server's secure port on APIAddr.
const Port = 6443

// Cluster is a running etcd and kube-apiserver.
type Cluster struct {
	Dir   string        // data, certificates, kubeconfigs, logs
	Netns harness.Netns // where etcd and the API server run
	PKI   *pki
	Admin string // kubeconfig path of a system:masters client

	etcd, api *process
}

// Binaries the tier runs, and where scripts/deps/kube.sh puts them.
func KubeAPIServer() string {
	return filepath.Join(harness.RepoRoot(), "build", "kube", "kube-apiserver")
}
func Kubectl() string { return filepath.Join(harness.RepoRoot(), "build", "kube", "kubectl") }

// Start brings up a cluster in a new netns named id+"-api", under dir.
func Start(id, dir string) (c *Cluster, err error) {
	for _, bin := range []string{KubeAPIServer(), Kubectl()} {
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("%s is missing: run scripts/deps/kube.sh (make deps) to build it", bin)
		}
	}
	if _, err := exec.LookPath("etcd"); err != nil {
		return nil, fmt.Errorf("etcd is missing: run scripts/deps/kube.sh (Debian's etcd-server): %w", err)
	}
	c = &Cluster{Dir: dir}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	if c.Netns, err = harness.NewNetns(id + "-api"); err != nil {
		return nil, err
	}
	if err = setUpAPINetns(c.Netns); err != nil {
		return nil, err
	}
	if c.PKI, err = makePKI(dir, []net.IP{APIAddr.AsSlice(), net.IPv4(127, 0, 0, 1)}); err != nil {
		return nil, err
	}
	if c.Admin, err = c.writeAdminKubeconfig(); err != nil {
		return nil, err
	}
	if c.etcd, err = c.start("etcd", c.etcdArgs()); err != nil {
		return nil, err
	}
	if err = c.StartAPIServer(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) etcdArgs() []string {
	return []string{"etcd",
		"--name", "tier", "--data-dir", filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "tier=http://127.0.0.1:2380",
		"--quota-backend-bytes", "1073741824", "--log-level", "warn",
	}
}

func (c *Cluster) apiArgs() []string {
	return []string{KubeAPIServer(),
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", "0.0.0.0", "--secure-port", fmt.Sprint(Port), "--advertise-address", APIAddr.String(),
		"--cert-dir", filepath.Join(c.Dir, "apiserver-certs"),
		"--tls-cert-file", c.PKI.ServingCert, "--tls-private-key-file", c.PKI.ServingKey,
		"--client-ca-file", c.PKI.CA,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", c.PKI.SAPub, "--service-account-signing-key-file", c.PKI.SAKey,
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--authorization-mode", "RBAC",
		"--profiling=false", "--v", "1",
	}
}

// StartAPIServer starts kube-apiserver (again, after StopAPIServer) and
// waits until it is ready.
func (c *Cluster) StartAPIServer() error {
	p, err := c.start("kube-apiserver", c.apiArgs())
	if err != nil {
		return err
	}
	c.api = p
	return c.WaitReady(3 * time.Minute)
}

// EnsureAPIServer leaves kube-apiserver running and ready, whatever a
// test did to it (a test's cleanup, so one failure does not fail the rest).
func (c *Cluster) EnsureAPIServer() error {
	if c.api.exited() {
		return c.StartAPIServer()
	}
	if err := c.ResumeAPIServer(); err != nil {
		return err
	}
	return c.WaitReady(3 * time.Minute)
}

// StopAPIServer kills kube-apiserver (SIGKILL, by PID) and reaps it.
func (c *Cluster) StopAPIServer() error { return c.api.kill() }

// PauseAPIServer freezes kube-apiserver (SIGSTOP): connections stay open
// and nothing answers, as with a hung server; ResumeAPIServer thaws it.
func (c *Cluster) PauseAPIServer() error  { return c.api.signal(syscall.SIGSTOP) }
func (c *Cluster) ResumeAPIServer() error { return c.api.signal(syscall.SIGCONT) }

// WaitReady polls /readyz until the API server answers 200, then until a
// list of IPAllocations from its cache answers (200, or 404 before the
// CRD exists): after a restart or a pause, /readyz is 200 a moment before
// a CRD's cache serves, and the tests want the server as a node finds it
// when it is up.
func (c *Cluster) WaitReady(limit time.Duration) error {
	hc, err := c.adminHTTP()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	base := fmt.Sprintf("https://%s:%d", APIAddr, Port)
	for _, probe := range []struct {
		path string
		ok   []int
	}{
		{"/readyz", []int{http.StatusOK}},
		{"/apis/tapbridge.io/v1alpha1/ipallocations?limit=1&resourceVersion=0", []int{http.StatusOK, http.StatusNotFound}},
	} {
		if err := c.poll(hc, base+probe.path, probe.ok, deadline); err != nil {
			return fmt.Errorf("kube-apiserver not ready within %s: %w (log: %s)", limit, err, c.api.logPath)
		}
	}
	return nil
}

func (c *Cluster) poll(hc *http.Client, url string, ok []int, deadline time.Time) error {
	var last error
	for time.Now().Before(deadline) {
		if c.api.exited() {
			return fmt.Errorf("kube-apiserver exited: %v", c.api.err)
		}
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if slices.Contains(ok, resp.StatusCode) {
				return nil
			}
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		last = err
		time.Sleep(250 * time.Millisecond)
	}
	return last
}

// Close kills both processes by PID and removes the netns; the data dir
// is the caller's.
func (c *Cluster) Close() error {
	var errs []error
	for _, p := range []*process{c.api, c.etcd} {
		if p != nil {
			_ = p.signal(syscall.SIGCONT) // a paused server cannot die of SIGKILL's reap otherwise
			errs = append(errs, p.kill())
		}
	}
	errs = append(errs, c.Netns.Delete())
	return errors.Join(errs...)
}

// RunIn runs cmd inside the API netns and returns its combined output.
func (c *Cluster) RunIn(ctx context.Context, name string, args ...string) ([]byte, error) {
	var out []byte
	err := c.Netns.Do(func() error {
		var err error
		out, err = exec.CommandContext(ctx, name, args...).CombinedOutput()
		return err
	})
	return out, err
}
