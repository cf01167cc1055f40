package kube_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/tapbridge/tapbridge-cni/test/kube"
)

// Multus thick on a sandbox node: multus-daemon runs as a process in the
// node's host netns, as the DaemonSet's hostNetwork pod does, and the
// runtime execs multus-shim, which posts each CNI call to the daemon's
// socket; the daemon execs the cluster network and tapbridge.
//
// What the DaemonSet gives the daemon, and what stands in for it here:
//   - its service account (in-cluster config: KUBERNETES_SERVICE_HOST/PORT
//     and /var/run/secrets/kubernetes.io/serviceaccount, the only client
//     NewCNIServer makes besides per-node certificates): a "multus"
//     service account with Multus' own ClusterRole (deployments/
//     multus-daemonset-thick.yml of v4.2.2), its token and the CA mounted
//     at that path in the daemon's private mount namespace;
//   - the host's /etc/cni/net.d (cniConfigDir, multusAutoconfigDir: the
//     cluster network's conflist; the daemon writes 00-multus.conf there,
//     and the runtime reads it), /run/multus (socketDir) and /run/netns:
//     directories of the node, and /run/netns itself;
//   - chrootDir /hostroot (plugins exec'd in the host's filesystem): the
//     daemon already runs in the node's view (its /var/lib/cni, /var/log,
//     hostname), so no chroot.
//
// Not given: MULTUS_NODE_NAME (the pods here have no spec.nodeName, as no
// scheduler runs; with it the daemon's pod informer would not see them), and
// nothing of a kubelet: only NADs with a resourceName read its pod-resources
// socket, and tapbridge's have none.

// multusDaemon is a node's running multus-daemon.
type multusDaemon struct {
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
	socket string // <socketDir>/multus.sock
}

// The daemon's mount namespace: the node's hostname, /var/lib/cni and
// /var/log as for thin, and the service account where client-go's
// in-cluster config reads it. /var is a tmpfs of its own (so nothing is
// made under the machine's /var/run), with /var/run/netns pointing at
// /run/netns. Propagation slave: netns mounted after the daemon started
// (each sandbox's) still show up in its /run/netns.
const daemonWrapper = `#!/bin/sh
exec unshare --mount --uts --propagation slave /bin/sh -ec '
hostname "$1"
mount -t tmpfs -o mode=755 tapbridge-node-var /var
mkdir -p /var/lib/cni /var/log /var/run/secrets/kubernetes.io/serviceaccount
ln -s /run/netns /var/run/netns
mount --bind "$2/var-lib-cni" /var/lib/cni
mount --bind "$2/var-log" /var/log
mount --bind "$2/serviceaccount" /var/run/secrets/kubernetes.io/serviceaccount
exec "$3" -config "$2/daemon-config.json"' sh "$1" "$2" "$3"
`

// multusRBAC is Multus' own service account and ClusterRole, as its
// thick DaemonSet manifest (v4.2.2) has them.
const multusRBAC = `apiVersion: v1
kind: ServiceAccount
metadata: {name: multus, namespace: kube-system}
---
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: multus}
rules:
- apiGroups: ["k8s.cni.cncf.io"]
  resources: ["*"]
  verbs: ["*"]
- apiGroups: [""]
  resources: [pods, pods/status]
  verbs: [get, list, update, watch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch, update]
---
kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: multus}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: multus}
subjects:
- {kind: ServiceAccount, name: multus, namespace: kube-system}
`

var multusSA struct {
	once  sync.Once
	token string
	err   error
}

// multusToken applies Multus' RBAC once per tier and returns a token of
// its service account.
func multusToken(t *testing.T) string {
	t.Helper()
	multusSA.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if multusSA.err = cluster.ApplyStrict(ctx, []byte(multusRBAC)); multusSA.err == nil {
			multusSA.token, multusSA.err = cluster.ServiceAccountToken(ctx, "kube-system", "multus")
		}
	})
	if multusSA.err != nil {
		t.Fatalf("Multus' service account: %v", multusSA.err)
	}
	return multusSA.token
}

// startThick starts the node's multus-daemon and returns the conflist the
// runtime reads: the 00-multus.conf the daemon generated (multus-shim, the
// cluster network as its clusterNetwork).
func (n *mnode) startThick(t *testing.T) *libcni.NetworkConfigList {
	t.Helper()
	netd, sa, sock := filepath.Join(n.dir, "net.d"), filepath.Join(n.dir, "serviceaccount"), filepath.Join(n.dir, "run-multus")
	for _, d := range []string{netd, sa} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ca, err := os.ReadFile(cluster.PKI.CA)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		filepath.Join(sa, "token"):     multusToken(t),
		filepath.Join(sa, "ca.crt"):    string(ca),
		filepath.Join(sa, "namespace"): "kube-system",
		// The cluster network, as simple as in thin's conflist.
		filepath.Join(netd, "10-cluster.conflist"): `{"cniVersion":"1.1.0","name":"cluster","plugins":[{"type":"loopback"}]}`,
		// The DaemonSet's daemon-config.json, with the node's directories;
		// every key of it also overrides the shim's config on each call,
		// which is how binDir and confDir (mode-1 NADs) reach Multus.
		// daemonSocketDir goes into 00-multus.conf for the shim, which
		// otherwise dials /run/multus (the DaemonSet's socketDir on the
		// host, where the daemon's /host/run/multus is mounted).
		// logFile goes into 00-multus.conf too, and the runtime execs
		// multus-shim with no wrapper, in the machine's mount namespace:
		// a path in the node's directory, the same file in both.
		filepath.Join(n.dir, "daemon-config.json"): fmt.Sprintf(`{"cniVersion":"1.1.0",
			"logLevel":"debug","logFile":%q,"logToStderr":true,
			"cniConfigDir":%q,"multusAutoconfigDir":%q,"multusConfigFile":"auto",
			"socketDir":%q,"daemonSocketDir":%q,"binDir":%q,"confDir":%q}`,
			n.multusLog(), netd, netd, sock, sock, n.bin, n.confDir()),
		filepath.Join(n.dir, "multus-daemon.sh"): daemonWrapper,
	}
	for path, content := range files {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(n.dir, "multus-daemon.sh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(kube.MultusBin("multus-shim"), filepath.Join(n.bin, "multus-shim")); err != nil {
		t.Fatal(err)
	}

	d, err := n.startDaemon(filepath.Join(n.dir, "multus-daemon.sh"))
	if err != nil {
		t.Fatal(err)
	}
	n.daemon = d
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Error(err)
		}
	})
	// The daemon answers /healthz before its config manager writes
	// 00-multus.conf (and may be caught writing it): wait for both.
	confPath := filepath.Join(netd, "00-multus.conf")
	var list *libcni.NetworkConfigList
	deadline := time.Now().Add(30 * time.Second)
	for {
		conf, rerr := os.ReadFile(confPath)
		if err = rerr; err == nil {
			if list, err = confListOf(conf); err == nil {
				if err = d.health(); err == nil {
					t.Logf("multus-daemon of %s ready; it wrote %s", n.name, conf)
					break
				}
			}
		}
		if d.exited() || time.Now().After(deadline) {
			t.Fatalf("multus-daemon of %s not ready (exited %v: %v): %v", n.name, d.exited(), d.err, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return list
}

// confListOf reads a single-plugin .conf file as a runtime does (libcni's
// deprecated ConfListFromConf, which containerd still applies to .conf
// files): a list of that one plugin, with its name and cniVersion.
func confListOf(conf []byte) (*libcni.NetworkConfigList, error) {
	var c struct {
		CNIVersion string `json:"cniVersion"`
		Name       string `json:"name"`
	}
	if err := json.Unmarshal(conf, &c); err != nil {
		return nil, err
	}
	list, err := json.Marshal(map[string]any{"cniVersion": c.CNIVersion, "name": c.Name, "plugins": []json.RawMessage{conf}})
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromBytes(list)
}

// startDaemon starts the wrapper in the node's host netns, in a process
// group of its own, ended by PID in stop.
func (n *mnode) startDaemon(wrapper string) (*multusDaemon, error) {
	logf, err := os.Create(filepath.Join(n.dir, "multus-daemon.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	d := &multusDaemon{cmd: exec.Command(wrapper, n.name, n.dir, kube.MultusBin("multus-daemon")),
		done: make(chan struct{}), socket: filepath.Join(n.dir, "run-multus", "multus.sock")}
	d.cmd.Env = append(os.Environ(),
		"KUBERNETES_SERVICE_HOST="+kube.APIAddr.String(), "KUBERNETES_SERVICE_PORT="+strconv.Itoa(kube.Port))
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.hn.Host.Do(d.cmd.Start); err != nil {
		return nil, fmt.Errorf("start multus-daemon: %w", err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

func (d *multusDaemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM (the daemon shuts its server down), then SIGKILL
// after 10 s, to the daemon's PID only.
func (d *multusDaemon) stop() error {
	if d.exited() {
		return fmt.Errorf("multus-daemon exited before the test's end: %v", d.err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-d.done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("multus-daemon (pid %d) did not die of SIGKILL", d.cmd.Process.Pid)
	}
}

// post sends a request to the daemon's API over its unix socket, as
// multus-shim (api.DoCNI) and the dynamic-networks controller
// (multuscni.HTTPClient) do: POST http://dummy<endpoint>, JSON.
func (d *multusDaemon) post(endpoint string, body any) ([]byte, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
		},
	}}
	resp, err := hc.Post("http://dummy"+endpoint, "application/json", bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: status %d: %s", endpoint, resp.StatusCode, bytes.TrimSpace(out))
	}
	return out, nil
}

func (d *multusDaemon) health() error {
	_, err := d.post("/healthz", nil)
	return err
}
