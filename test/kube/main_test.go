package kube_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tapbridge/tapbridge-cni/test/harness"
	"github.com/tapbridge/tapbridge-cni/test/kube"
)

// The tier's shared world: one API server for every test (start-up is
// the slow part), each test on networks and pods of its own.
var (
	cluster    *kube.Cluster
	ipamBin    string // tapbridge-ipam built with failpoints
	cniBin     string // tapbridge-cni
	saConfig   string // kubeconfig with the DaemonSet's service-account token
	applied    []string
	skippedDoc []string
	runID      string
)

const podNamespace = "vms"

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("the API-server tier needs root (network namespaces): run `make test` as root")
		os.Exit(1)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "tapbridge-kube-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	if err := setUp(tmp); err != nil {
		fmt.Fprintln(os.Stderr, "set up:", err)
		if cluster != nil {
			dumpLogs(tmp)
			_ = cluster.Close()
		}
		return 1
	}
	fmt.Printf("kube tier: API server %s up, manifests applied, in %s\n", kube.Version, time.Since(start).Round(time.Millisecond))
	code := m.Run()
	if code != 0 {
		dumpLogs(tmp)
	}
	if err := cluster.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "tear down:", err)
		code = 1
	}
	return code
}

func dumpLogs(dir string) {
	for _, f := range []string{"kube-apiserver.log", "etcd.log"} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		lines := strings.Split(string(b), "\n")
		fmt.Fprintf(os.Stderr, "--- last lines of %s\n%s\n", f, strings.Join(lines[max(0, len(lines)-30):], "\n"))
	}
}

func setUp(tmp string) error {
	runID = harness.RunID("tbk")
	// The IPAM alone in its directory: it is CNI_PATH for tapbridge-cni.
	ipamBin = filepath.Join(tmp, "cni-path", "tapbridge-ipam")
	cniBin = filepath.Join(tmp, "tapbridge-cni")
	for _, b := range []struct{ out, tags, pkg string }{
		{ipamBin, "failpoints", "./cmd/tapbridge-ipam"}, {cniBin, "", "./cmd/tapbridge-cni"},
	} {
		build := exec.Command("go", "build", "-tags", b.tags, "-o", b.out, b.pkg)
		build.Dir, build.Env = harness.RepoRoot(), append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w\n%s", b.pkg, err, out)
		}
	}
	var err error
	if cluster, err = kube.Start(runID, tmp); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if applied, skippedDoc, err = cluster.ApplyProject(ctx); err != nil {
		return err
	}
	if err := makeNamespace(ctx, podNamespace); err != nil {
		return err
	}
	token, err := cluster.ServiceAccountToken(ctx, "kube-system", "tapbridge-cni")
	if err != nil {
		return err
	}
	saConfig, err = cluster.TokenKubeconfig("tapbridge-cni", token)
	return err
}

// makeNamespace creates a namespace and its default service account
// (no controller-manager runs here to make it, and pods need it).
func makeNamespace(ctx context.Context, name string) error {
	cs, err := cluster.Clientset()
	if err != nil {
		return err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	_, err = cs.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	return err
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
