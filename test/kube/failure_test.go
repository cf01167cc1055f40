package kube_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

const dualRanges = `[[{"subnet":"10.103.0.0/24","rangeStart":"10.103.0.10","rangeEnd":"10.103.0.200"}],[{"subnet":"2001:db8:103::/64"}]]`

// started is an IPAM exec stopped by a "<step>:stop" failpoint.
type started struct {
	p *harness.Proc
}

// startStopped runs cmd with the failpoint step:stop and waits until the
// IPAM has stopped itself there.
func (n *node) startStopped(t *testing.T, nw *network, cmd string, a attachment, step string) started {
	t.Helper()
	c := harness.Call{Binary: ipamBin, Command: cmd, ContainerID: a.cid, IfName: a.ifname, Args: a.args(), Netns: n.pod.Path(),
		Path: "/nonexistent", Stdin: nw.conf(n)}
	var p *harness.Proc
	if err := n.ns.Do(func() error {
		var err error
		p, err = c.Start("TAPBRIDGE_FAILPOINT=" + step + ":stop")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if procState(p.Cmd.Process.Pid) == "T" {
			return started{p}
		}
		if time.Now().After(end) {
			_, _ = p.Kill()
			t.Fatalf("%s never reached %s: %s %s", cmd, step, p.Stdout.String(), p.Stderr.String())
		}
	}
}

func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i > 0 && len(s) > i+2 {
		return s[i+2 : i+3]
	}
	return ""
}

// resume lets the IPAM go on and returns its CNI error (nil on success)
// and how long it took from there.
func (s started) resume(t *testing.T) (*types.Error, time.Duration) {
	t.Helper()
	t0 := time.Now()
	if err := s.p.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	rc, err := s.p.Wait(90 * time.Second)
	if err != nil {
		t.Fatalf("%v; stdout %s; stderr %s", err, s.p.Stdout.String(), s.p.Stderr.String())
	}
	if rc == 0 {
		return nil, time.Since(t0)
	}
	var e types.Error
	if err := json.Unmarshal(s.p.Stdout.Bytes(), &e); err != nil {
		t.Fatalf("rc %d and stdout %q is not a CNI error", rc, s.p.Stdout.String())
	}
	return &e, time.Since(t0)
}

// apiServerBack is a cleanup for tests that stop or pause the API server.
func apiServerBack(t *testing.T) func() {
	return func() {
		if err := cluster.EnsureAPIServer(); err != nil {
			t.Error(err)
		}
	}
}

func restartAPI(t *testing.T) {
	t.Helper()
	if err := cluster.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
}

// TestAPIServerStoppedMidAdd: the API server dies between the two
// allocations of a dual-stack ADD: code 11 at once, naming the API; the
// first allocation (the undo could not reach the API either) goes with
// the runtime's DEL once the API is back; the retried ADD succeeds.
func TestAPIServerStoppedMidAdd(t *testing.T) {
	t.Cleanup(apiServerBack(t))
	nw := newNet(t, dualRanges)
	n := newNode(t, "node-a")
	a := attachment{cid: "mid-add", ifname: "net1"}
	s := n.startStopped(t, nw, "ADD", a, "ipam-created")
	if err := cluster.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	e, took := s.resume(t)
	if e == nil || e.Code != 11 {
		restartAPI(t)
		t.Fatalf("ADD with the API server gone: %v, want code 11", e)
	}
	t.Logf("ADD after the API server died: code %d in %s: %s", e.Code, took.Round(time.Millisecond), e.Msg)
	restartAPI(t)
	n.mustSucceed(t, nw, "DEL", a, nil)
	if left := allocations(t, nw); len(left) != 0 {
		t.Fatalf("left after DEL: %v", left)
	}
	if got := n.add(t, nw, a); len(got) != 2 {
		t.Fatalf("retried ADD: %v", got)
	}
	n.mustSucceed(t, nw, "DEL", a, nil)
}

// TestAPIServerHungMidAdd: the API server stops answering (SIGSTOP)
// just before the create: the ADD gives up with code 11 within its
// timeout (plus the undo's budget), and once the server answers again a
// DEL leaves nothing, whatever the server did with the request.
func TestAPIServerHungMidAdd(t *testing.T) {
	t.Cleanup(apiServerBack(t))
	nw := newNet(t, dualRanges)
	nw.timeout = "4s"
	n := newNode(t, "node-a")
	a := attachment{cid: "hung-add", ifname: "net1"}
	s := n.startStopped(t, nw, "ADD", a, "ipam-before-create")
	if err := cluster.PauseAPIServer(); err != nil {
		t.Fatal(err)
	}
	e, took := s.resume(t)
	if err := cluster.ResumeAPIServer(); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitReady(time.Minute); err != nil {
		t.Fatal(err)
	}
	if e == nil || e.Code != 11 {
		t.Fatalf("ADD against a hung API server: %v, want code 11", e)
	}
	limit, _ := time.ParseDuration(nw.timeout)
	t.Logf("ADD against a hung API server: code %d after %s (timeout %s): %s", e.Code, took.Round(time.Millisecond), limit, e.Msg)
	if took > limit+3*time.Second+2*time.Second {
		t.Errorf("took %s, more than the timeout %s and the undo budget", took, limit)
	}
	n.mustSucceed(t, nw, "DEL", a, nil)
	if left := allocations(t, nw); len(left) != 0 {
		t.Fatalf("left after DEL: %v", left)
	}
}

// TestAPIServerStoppedMidDel: DEL has found the allocations when the API
// server dies: code 11, the allocations stay, and the retried DEL frees
// them.
func TestAPIServerStoppedMidDel(t *testing.T) {
	t.Cleanup(apiServerBack(t))
	nw := newNet(t, dualRanges)
	n := newNode(t, "node-a")
	a := attachment{cid: "mid-del", ifname: "net1"}
	n.add(t, nw, a)
	before := allocations(t, nw)
	if len(before) != 2 {
		t.Fatalf("after ADD: %d allocations, want 2: %v", len(before), keys(before))
	}
	s := n.startStopped(t, nw, "DEL", a, "ipam-del-listed")
	if err := cluster.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	e, took := s.resume(t)
	restartAPI(t)
	if e == nil || e.Code != 11 {
		t.Fatalf("DEL with the API server gone: %v, want code 11", e)
	}
	t.Logf("DEL after the API server died: code %d in %s: %s", e.Code, took.Round(time.Millisecond), e.Msg)
	// A release whose request never left (connection refused) must have
	// left its allocation; one sent on the dead server's connection
	// ("unexpected EOF") has an unknown outcome, as for any client. The
	// retried DEL must free whatever is left either way.
	left := allocations(t, nw)
	for _, part := range strings.Split(e.Msg, "release ")[1:] {
		for addr := range before {
			if strings.Contains(part, "("+addr+" of ") && strings.Contains(part, "connection refused") {
				if _, ok := left[addr]; !ok {
					t.Errorf("%s is gone although its release never reached a server (before: %v, after: %v)", addr, keys(before), keys(left))
				}
			}
		}
	}
	t.Logf("allocations before DEL %v, after the failed DEL %v", keys(before), keys(left))
	n.mustSucceed(t, nw, "DEL", a, nil)
	if left := allocations(t, nw); len(left) != 0 {
		t.Fatalf("left after the retried DEL: %v", left)
	}
}

// TestAPIServerRestart: allocations live in etcd, not in the server: a
// restarted server knows them, and ADD and DEL work on.
func TestAPIServerRestart(t *testing.T) {
	t.Cleanup(apiServerBack(t))
	nw := newNet(t, dualRanges)
	n := newNode(t, "node-a")
	first := attachment{cid: "before", ifname: "net1"}
	a := n.add(t, nw, first)
	if err := cluster.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	n.mustFail(t, nw, "ADD", attachment{cid: "while-down", ifname: "net1"}, 11)
	restartAPI(t)
	if again := n.add(t, nw, first); fmt.Sprint(again) != fmt.Sprint(a) {
		t.Fatalf("after the restart the attachment has %v, before %v", again, a)
	}
	second := attachment{cid: "after", ifname: "net1"}
	if b := n.add(t, nw, second); b[0] == a[0] {
		t.Fatalf("after the restart %s was handed out twice", b[0])
	}
	for _, at := range []attachment{first, second, {cid: "while-down", ifname: "net1"}} {
		n.mustSucceed(t, nw, "DEL", at, nil)
	}
	if left := allocations(t, nw); len(left) != 0 {
		t.Fatalf("left: %v", left)
	}
}

// TestKillAtEachStep: the IPAM dies (exit 137, as from SIGKILL) after
// each step of ADD. Nothing is half-allocated: an attachment's leftover
// goes with the runtime's DEL, or with GC when that DEL is lost, or with
// the sweep once its pod is gone; a claim's leftover is the claim's, and
// the retried ADD gets it back.
func TestKillAtEachStep(t *testing.T) {
	nw := newNet(t, dualRanges)
	n, other := newNode(t, "node-a"), newNode(t, "node-b")
	makeNode(t, other.name) // the sweep runs on a Node, for users of nodes that are not (node-a)
	for i, step := range []string{"ipam-before-create", "ipam-created", "ipam-allocated"} {
		pod := makePod(t, fmt.Sprintf("kill-%d", i), "")
		a := attachment{cid: fmt.Sprintf("kill-%d", i), ifname: "net1", pod: pod}
		out := n.call(nw, "ADD", a, nil, "TAPBRIDGE_FAILPOINT="+step+":exit")
		if out.RC != 137 {
			t.Fatalf("%s: rc %d, want 137: %s %s", step, out.RC, out.Stdout, out.Stderr)
		}
		left := len(allocations(t, nw))
		switch i % 3 {
		case 0:
			n.mustSucceed(t, nw, "DEL", a, nil)
			t.Logf("killed after %s: %d allocations left, released by DEL", step, left)
		case 1:
			waitForGC(t, n, nw)
			t.Logf("killed after %s: %d allocations left, released by GC (not in valid-attachments)", step, left)
		case 2:
			deletePod(t, pod)
			waitForGC(t, other, nw) // another node: only the sweep can free it
			t.Logf("killed after %s: %d allocations left, released by the sweep (pod gone)", step, left)
		}
		if rest := allocations(t, nw); len(rest) != 0 {
			t.Fatalf("killed after %s: %d allocations left after release", step, len(rest))
		}
	}

	// A claim's steps: its first ADD creates (ipam-created) and writes
	// the claim's status (ipam-claim-status); a later pod joins
	// (ipam-user-added); every ADD passes ipam-allocated.
	for ci, steps := range [][]string{{"ipam-created", "ipam-user-added"}, {"ipam-claim-status", "ipam-allocated"}} {
		name := fmt.Sprintf("vm9-%d.flat", ci)
		makeClaim(t, name, nw.name, "pod0vm9")
		ann := claimNetworks(nw, "pod0vm9", name)
		var addr string
		for i, step := range steps {
			a := attachment{cid: fmt.Sprintf("vm9-%d-%d", ci, i), ifname: "pod0vm9", pod: makePod(t, fmt.Sprintf("virt-launcher-vm9-%d-%d", ci, i), ann)}
			if out := n.call(nw, "ADD", a, nil, "TAPBRIDGE_FAILPOINT="+step+":exit"); out.RC != 137 {
				t.Fatalf("%s: rc %d, want 137 (%s)", step, out.RC, out.Stdout)
			}
			got := n.add(t, nw, a) // the runtime retries the pod
			if addr == "" {
				addr = fmt.Sprint(got)
			}
			if fmt.Sprint(got) != addr {
				t.Fatalf("claim after a kill at %s: %v, want %s", step, got, addr)
			}
			if n := len(claimAllocations(t, nw, name)); n != 2 {
				t.Fatalf("kill at %s: %s holds %d allocations, want 2", step, name, n)
			}
			t.Logf("killed after %s with %s: the retried ADD gets the claim's %s", step, name, addr)
			n.mustSucceed(t, nw, "DEL", a, nil)
			deletePod(t, a.pod)
		}
		deleteClaim(t, name)
	}
	waitForGC(t, n, nw)
	if rest := allocations(t, nw); len(rest) != 0 {
		t.Fatalf("claims gone: %d allocations left", len(rest))
	}
}

// TestRBAC: the DaemonSet's service account (every other test runs the
// IPAM with its token) may do what the IPAM needs; a service account
// without the binding is refused with code 113, naming the refusal.
func TestRBAC(t *testing.T) {
	cs, _ := clients(t)
	ctx := ctxT(t)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "not-tapbridge"}}
	if _, err := cs.CoreV1().ServiceAccounts("kube-system").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token, err := cluster.ServiceAccountToken(ctx, "kube-system", "not-tapbridge")
	if err != nil {
		t.Fatal(err)
	}
	nw := newNet(t, dualRanges)
	if nw.kubeconfig, err = cluster.TokenKubeconfig("not-tapbridge", token); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, "node-a")
	msg := n.mustFail(t, nw, "ADD", attachment{cid: "refused", ifname: "net1", pod: makePod(t, "rbac-pod", "")}, 113)
	if !strings.Contains(msg, "forbidden") {
		t.Errorf("message %q does not say forbidden", msg)
	}
	if left := allocations(t, nw); len(left) != 0 {
		t.Fatalf("a refused ADD left %v", left)
	}
}

// TestStatusAndVersion: STATUS passes while the API serves both CRDs,
// answers 50 within the timeout when the API server hangs; VERSION
// lists the CNI versions.
func TestStatusAndVersion(t *testing.T) {
	t.Cleanup(apiServerBack(t))
	nw := newNet(t, dualRanges)
	nw.timeout = "4s"
	n := newNode(t, "node-a")
	n.mustSucceed(t, nw, "STATUS", attachment{}, nil)
	if err := cluster.PauseAPIServer(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	out := n.call(nw, "STATUS", attachment{}, nil)
	took := time.Since(t0)
	if err := cluster.ResumeAPIServer(); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitReady(time.Minute); err != nil {
		t.Fatal(err)
	}
	if out.Err == nil || out.Err.Code != 50 {
		t.Fatalf("STATUS against a hung API server: rc %d %s, want code 50", out.RC, out.Stdout)
	}
	t.Logf("STATUS against a hung API server: code 50 in %s: %s", took.Round(time.Millisecond), out.Err.Msg)
	// A kubeconfig the DaemonSet has not written yet: not ready (50 for
	// STATUS, 11 for ADD), not a wrong config.
	bad := *nw
	bad.kubeconfig = "/nonexistent/kubeconfig"
	n.mustFail(t, &bad, "STATUS", attachment{}, 50)
	n.mustFail(t, &bad, "ADD", attachment{cid: "no-kubeconfig", ifname: "net1"}, 11)
	out = n.call(nw, "VERSION", attachment{}, nil)
	if out.RC != 0 || !strings.Contains(string(out.Stdout), `"1.1.0"`) {
		t.Fatalf("VERSION: rc %d %s", out.RC, out.Stdout)
	}
}

// keys lists a map's keys, sorted.
func keys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
