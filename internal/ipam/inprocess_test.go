package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// The upstream binaries of the version go.mod pins (scripts/install-deps.sh).
func upstreamBin(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "build", "cni-bin")
	for _, p := range []string{"host-local", "static"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Skipf("upstream %s not installed in %s (scripts/install-deps.sh installs it): %v", p, dir, err)
		}
	}
	return dir
}

// step is one call of a scenario; conf edits the scenario's config for
// this call only.
type step struct {
	cmd, cid, ifname, args string
	conf                   func(map[string]any)
}

// outcome is what a caller can see of one call.
type outcome struct {
	Result string // the result's JSON, as tapbridge goes on to use it
	Code   uint
	Msg    string
	Store  map[string]string // the store's files after the call
}

// run plays the steps against one store, in process or by exec.
func run(t *testing.T, bin string, exec bool, base map[string]any, steps []step) []outcome {
	t.Helper()
	store := t.TempDir()
	var out []outcome
	for _, s := range steps {
		conf := clone(base)
		if ipam, ok := conf["ipam"].(map[string]any); ok && ipam["type"] == "host-local" {
			ipam["dataDir"] = store
		}
		if s.conf != nil {
			s.conf(conf)
		}
		b, _ := json.Marshal(conf)
		typ, _ := conf["ipam"].(map[string]any)["type"].(string)
		p := Plugin{Type: typ, Config: b, Path: bin, Timeout: 20 * time.Second, Exec: exec}
		if p.InProcess() == exec {
			t.Fatalf("Plugin{Exec: %v}.InProcess() = %v", exec, p.InProcess())
		}
		c := Call{ContainerID: s.cid, IfName: s.ifname, Netns: "/var/run/netns/none", Args: s.args}
		var o outcome
		var err error
		switch s.cmd {
		case "ADD":
			res, e := p.Add(context.Background(), c)
			if err = e; err == nil {
				rb, _ := json.Marshal(res)
				o.Result = string(rb)
			}
		case "DEL":
			err = p.Del(context.Background(), c)
		case "CHECK":
			err = p.Check(context.Background(), c)
		case "GC":
			err = p.GC(context.Background())
		case "STATUS":
			err = p.Status(context.Background())
		}
		if err != nil {
			var ce *types.Error
			if !errors.As(err, &ce) {
				t.Fatalf("%s: error without a CNI code: %v", s.cmd, err)
			}
			o.Code, o.Msg = ce.Code, ce.Msg
		}
		o.Store = harness.Files(t, store)
		out = append(out, o)
	}
	return out
}

func clone(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var c map[string]any
	_ = json.Unmarshal(b, &c)
	return c
}

// compare plays the steps both ways and fails on the first call whose
// outcome differs. want checks the exec'd outcomes, so that a scenario
// is known to reach what it means to (an exhausted range, a refusal).
func compare(t *testing.T, base map[string]any, steps []step, want func(t *testing.T, o []outcome)) {
	t.Helper()
	bin := upstreamBin(t)
	byExec := run(t, bin, true, base, steps)
	inProc := run(t, bin, false, base, steps)
	for i := range steps {
		e, p := byExec[i], inProc[i]
		if fmt.Sprint(e) != fmt.Sprint(p) {
			t.Fatalf("step %d (%s %s/%s %q) differs:\n exec:       %+v\n in process: %+v", i, steps[i].cmd, steps[i].cid, steps[i].ifname, steps[i].args, e, p)
		}
	}
	if want != nil {
		want(t, byExec)
	}
}

func hostLocal(version string, ranges ...[]map[string]any) map[string]any {
	return map[string]any{
		"cniVersion": version, "name": "vmnet", "type": "tapbridge-cni",
		"ipam": map[string]any{"type": "host-local", "ranges": ranges},
	}
}

func r4(subnet, start, end string) map[string]any {
	r := map[string]any{"subnet": subnet}
	if start != "" {
		r["rangeStart"], r["rangeEnd"] = start, end
	}
	return r
}

func set(path string, v any) func(map[string]any) {
	return func(c map[string]any) {
		keys := strings.Split(path, ".")
		m := c
		for _, k := range keys[:len(keys)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[k] = next
			}
			m = next
		}
		m[keys[len(keys)-1]] = v
	}
}

func codes(t *testing.T, o []outcome, want ...uint) {
	t.Helper()
	for i, w := range want {
		if o[i].Code != w {
			t.Errorf("step %d: code %d (%q), want %d", i, o[i].Code, o[i].Msg, w)
		}
	}
}

func TestHostLocalInProcessLifecycle(t *testing.T) {
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			base := hostLocal(v, []map[string]any{r4("10.9.0.0/24", "10.9.0.10", "10.9.0.20")})
			steps := []step{
				{cmd: "ADD", cid: "c1", ifname: "eth0"},
				{cmd: "ADD", cid: "c2", ifname: "eth0"},
				{cmd: "ADD", cid: "c1", ifname: "eth1"},
				{cmd: "ADD", cid: "c1", ifname: "eth0"}, // a second allocation is refused
				{cmd: "CHECK", cid: "c1", ifname: "eth0"},
				{cmd: "DEL", cid: "c2", ifname: "eth0"},
				{cmd: "CHECK", cid: "c2", ifname: "eth0"},
				{cmd: "ADD", cid: "c3", ifname: "eth0"}, // round robin: not c2's address
				{cmd: "DEL", cid: "unknown", ifname: "eth0"},
				{cmd: "DEL", cid: "c2", ifname: "eth0"},
			}
			compare(t, base, steps, func(t *testing.T, o []outcome) {
				if !strings.Contains(o[0].Result, "10.9.0.10") || !strings.Contains(o[7].Result, "10.9.0.13") {
					t.Errorf("unexpected addresses: %s, %s", o[0].Result, o[7].Result)
				}
				check, unknown := uint(0), uint(999)
				if v == "0.3.1" { // skel: no CHECK before 0.4.0
					check, unknown = 1, 1
				}
				codes(t, o, 0, 0, 0, 999, check, 0, unknown, 0, 0, 0)
			})
		})
	}
}

func TestHostLocalInProcessExhaustion(t *testing.T) {
	base := hostLocal("1.0.0", []map[string]any{r4("10.9.0.0/24", "10.9.0.1", "10.9.0.3")}) // .1 is the gateway
	steps := []step{
		{cmd: "ADD", cid: "a", ifname: "eth0"},
		{cmd: "ADD", cid: "b", ifname: "eth0"},
		{cmd: "ADD", cid: "c", ifname: "eth0"},
		{cmd: "DEL", cid: "a", ifname: "eth0"},
		{cmd: "ADD", cid: "c", ifname: "eth0"},
		{cmd: "ADD", cid: "d", ifname: "eth0"},
	}
	compare(t, base, steps, func(t *testing.T, o []outcome) {
		codes(t, o, 0, 0, 999, 0, 0, 999)
		if !strings.Contains(o[2].Msg, "no IP addresses available") {
			t.Errorf("exhaustion: %q", o[2].Msg)
		}
	})
}

func TestHostLocalInProcessRequestedIPs(t *testing.T) {
	base := hostLocal("1.1.0",
		[]map[string]any{r4("10.9.0.0/24", "10.9.0.10", "10.9.0.20")},
		[]map[string]any{r4("fd09::/64", "fd09::10", "fd09::20")})
	steps := []step{
		{cmd: "ADD", cid: "rt", ifname: "eth0", conf: set("runtimeConfig.ips", []string{"10.9.0.15", "fd09::15/64"})},
		{cmd: "ADD", cid: "args", ifname: "eth0", conf: set("args.cni.ips", []string{"10.9.0.16"})},
		{cmd: "ADD", cid: "env", ifname: "eth0", args: "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.9.0.17"},
		{cmd: "ADD", cid: "both", ifname: "eth0", args: "IP=10.9.0.18", conf: set("args.cni.ips", []string{"10.9.0.18"})},
		{cmd: "ADD", cid: "taken", ifname: "eth0", conf: set("runtimeConfig.ips", []string{"10.9.0.15"})},
		{cmd: "ADD", cid: "gw", ifname: "eth0", conf: set("runtimeConfig.ips", []string{"10.9.0.1"})},
		{cmd: "ADD", cid: "outside", ifname: "eth0", conf: set("runtimeConfig.ips", []string{"10.9.1.5"})},
		{cmd: "ADD", cid: "bad", ifname: "eth0", conf: set("runtimeConfig.ips", []string{"not-an-ip"})},
		{cmd: "ADD", cid: "unknown", ifname: "eth0", args: "K8S_POD_NAME=p"},
		{cmd: "ADD", cid: "badenv", ifname: "eth0", args: "IP=10.9.0"},
		{cmd: "CHECK", cid: "env", ifname: "eth0"},
		{cmd: "DEL", cid: "rt", ifname: "eth0"},
	}
	compare(t, base, steps, func(t *testing.T, o []outcome) {
		codes(t, o, 0, 0, 0, 0, 999, 999, 999, 999, 999, 999, 0, 0)
		if !strings.Contains(o[0].Result, "fd09::15") || !strings.Contains(o[2].Result, "10.9.0.17") {
			t.Errorf("requested IPs not given: %s / %s", o[0].Result, o[2].Result)
		}
	})
}

// Two requested IPs in one range set: both paths refuse the ADD and keep
// nothing, but which IP the binary names is random (it holds the requests
// in a map), so the outcome is compared by its shape, not byte for byte;
// in process, the second in request order is named, every time.
func TestHostLocalInProcessTwoIPsInOneSet(t *testing.T) {
	base := hostLocal("1.1.0", []map[string]any{r4("10.9.0.0/24", "10.9.0.10", "10.9.0.20")})
	steps := []step{{cmd: "ADD", cid: "twice", ifname: "eth0", conf: set("runtimeConfig.ips", []string{"10.9.0.19", "10.9.0.20"})}}
	bin := upstreamBin(t)
	for _, exec := range []bool{true, false} {
		o := run(t, bin, exec, base, steps)[0]
		named := strings.TrimPrefix(o.Msg, "failed to allocate all requested IPs: ")
		if o.Code != 999 || (named != "10.9.0.19" && named != "10.9.0.20") || (!exec && named != "10.9.0.20") {
			t.Errorf("exec=%v: code %d %q, want 999 naming one of the two (in process: the second)", exec, o.Code, o.Msg)
		}
		for f := range o.Store {
			if strings.HasSuffix(f, "/10.9.0.19") || strings.HasSuffix(f, "/10.9.0.20") {
				t.Errorf("exec=%v: the refused ADD left %s", exec, f)
			}
		}
	}
}

func TestHostLocalInProcessRangeSets(t *testing.T) {
	twoRanges := []map[string]any{r4("10.9.0.0/24", "10.9.0.10", "10.9.0.11"), r4("10.9.5.0/24", "10.9.5.10", "10.9.5.11")}
	base := hostLocal("1.0.0", twoRanges, []map[string]any{r4("fd09::/120", "", "")})
	base["ipam"].(map[string]any)["routes"] = []map[string]any{{"dst": "0.0.0.0/0"}}
	var steps []step
	for i := range 5 {
		steps = append(steps, step{cmd: "ADD", cid: fmt.Sprint("c", i), ifname: "eth0"})
	}
	steps = append(steps, step{cmd: "DEL", cid: "c1", ifname: "eth0"}, step{cmd: "ADD", cid: "c9", ifname: "eth0"})
	compare(t, base, steps, func(t *testing.T, o []outcome) {
		codes(t, o, 0, 0, 0, 0, 999, 0, 0)
		if !strings.Contains(o[2].Result, "10.9.5.10") {
			t.Errorf("third ADD not in the second range: %s", o[2].Result)
		}
	})
}

// Configs host-local refuses, each refused the same way.
func TestHostLocalInProcessBadConfigs(t *testing.T) {
	cases := map[string]func(map[string]any){
		"overlap":            set("ipam.ranges", [][]map[string]any{{r4("10.9.0.0/24", "", "")}, {r4("10.9.0.0/25", "", "")}}),
		"host bits":          set("ipam.ranges", [][]map[string]any{{r4("10.9.0.1/24", "", "")}}),
		"start outside":      set("ipam.ranges", [][]map[string]any{{r4("10.9.0.0/24", "10.9.1.1", "10.9.0.5")}}),
		"too small":          set("ipam.ranges", [][]map[string]any{{r4("10.9.0.0/31", "", "")}}),
		"mixed set":          set("ipam.ranges", [][]map[string]any{{r4("10.9.0.0/24", "", ""), r4("fd09::/64", "", "")}}),
		"no ranges":          set("ipam.ranges", [][]map[string]any{}),
		"empty set":          set("ipam.ranges", [][]map[string]any{{}}),
		"bad subnet":         set("ipam.ranges", [][]map[string]any{{{"subnet": "10.9.0.0/33"}}}),
		"old style":          func(c map[string]any) { set("ipam.subnet", "10.9.7.0/24")(c); set("ipam.ranges", nil)(c) },
		"resolvConf missing": set("ipam.resolvConf", "/nonexistent/resolv.conf"),
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			compare(t, hostLocal("1.0.0"), []step{{cmd: "ADD", cid: "c", ifname: "eth0", conf: mod}, {cmd: "DEL", cid: "c", ifname: "eth0", conf: mod}}, nil)
		})
	}
}

func TestHostLocalInProcessResolvConf(t *testing.T) {
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	text := "# c\n; c\nnameserver 10.0.0.53\nnameserver fd00::53\ndomain a.example\nsearch a.example b.example\noptions ndots:2 edns0\nlonely\n"
	if err := os.WriteFile(rc, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	base := hostLocal("1.0.0", []map[string]any{r4("10.9.0.0/24", "", "")})
	base["ipam"].(map[string]any)["resolvConf"] = rc
	compare(t, base, []step{{cmd: "ADD", cid: "c", ifname: "eth0"}}, func(t *testing.T, o []outcome) {
		if !strings.Contains(o[0].Result, "ndots:2") {
			t.Errorf("no DNS in the result: %s", o[0].Result)
		}
	})
}

// GC and STATUS: the pinned binaries register neither, so both succeed
// and leave the store as it was, whatever the valid list says.
func TestHostLocalInProcessGCAndStatus(t *testing.T) {
	base := hostLocal("1.1.0", []map[string]any{r4("10.9.0.0/24", "", "")})
	steps := []step{
		{cmd: "ADD", cid: "keep", ifname: "eth0"},
		{cmd: "ADD", cid: "stale", ifname: "eth0"},
		{cmd: "GC", conf: set("cni.dev/valid-attachments", []map[string]string{{"containerID": "keep", "ifname": "eth0"}})},
		{cmd: "STATUS"},
	}
	compare(t, base, steps, func(t *testing.T, o []outcome) {
		codes(t, o, 0, 0, 0, 0)
		if len(o[3].Store) != len(o[1].Store) {
			t.Errorf("GC changed the store: %v -> %v", o[1].Store, o[3].Store)
		}
	})
}

func TestStaticInProcess(t *testing.T) {
	base := map[string]any{
		"cniVersion": "1.0.0", "name": "vmnet", "type": "tapbridge-cni",
		"ipam": map[string]any{"type": "static",
			"addresses": []map[string]any{{"address": "10.9.0.5/24", "gateway": "10.9.0.1"}, {"address": "fd09::5/64"}},
			"routes":    []map[string]any{{"dst": "0.0.0.0/0"}},
			"dns":       map[string]any{"nameservers": []string{"10.9.0.53"}}},
	}
	prev := func(ip, gw string) func(map[string]any) {
		return set("prevResult", map[string]any{"cniVersion": "1.0.0", "ips": []map[string]any{{"address": ip, "gateway": gw}}})
	}
	steps := []step{
		{cmd: "ADD", cid: "c", ifname: "eth0"},
		{cmd: "ADD", cid: "c", ifname: "eth0", args: "IgnoreUnknown=1;IP=10.9.1.7/24,10.9.2.7/24;GATEWAY=10.9.1.1"},
		{cmd: "ADD", cid: "c", ifname: "eth0", conf: set("args.cni.ips", []string{"10.9.3.7/24"})},
		{cmd: "ADD", cid: "c", ifname: "eth0", conf: set("runtimeConfig.ips", []string{"10.9.4.7/24"})},
		{cmd: "ADD", cid: "c", ifname: "eth0", conf: set("runtimeConfig.ips", []string{"10.9.4.7"})},
		{cmd: "ADD", cid: "c", ifname: "eth0", args: "IP=10.9.1.7"},
		{cmd: "ADD", cid: "c", ifname: "eth0", args: "IP=10.9.1.7/24;GATEWAY=x"},
		{cmd: "ADD", cid: "c", ifname: "eth0", conf: set("ipam.addresses", []map[string]any{{"address": "10.9.0.5"}})},
		{cmd: "ADD", cid: "c", ifname: "eth0", conf: set("cniVersion", "0.3.1")},
		{cmd: "CHECK", cid: "c", ifname: "eth0", conf: prev("10.9.0.5/24", "10.9.0.1")},
		{cmd: "CHECK", cid: "c", ifname: "eth0", conf: prev("10.9.0.5/24", "10.9.0.2")},
		{cmd: "CHECK", cid: "c", ifname: "eth0"},
		{cmd: "DEL", cid: "c", ifname: "eth0"},
		{cmd: "GC"}, {cmd: "STATUS"}, // skel: not before 1.1.0
		{cmd: "GC", conf: set("cniVersion", "1.1.0")}, {cmd: "STATUS", conf: set("cniVersion", "1.1.0")},
	}
	compare(t, base, steps, func(t *testing.T, o []outcome) {
		codes(t, o, 0, 0, 0, 0, 999, 999, 999, 999, 0, 0, 999, 999, 0, 1, 1, 0, 0)
	})
}

// An exec'd host-local and the in-process one allocate at the same time
// from one store: the shared flock keeps every address unique.
func TestHostLocalInProcessAndExecShareTheStore(t *testing.T) {
	bin := upstreamBin(t)
	store := t.TempDir()
	base := hostLocal("1.0.0", []map[string]any{r4("10.9.0.0/24", "10.9.0.2", "10.9.0.254")})
	base["ipam"].(map[string]any)["dataDir"] = store
	conf, _ := json.Marshal(base)
	const n = 50
	var mu sync.Mutex
	got := map[string]string{}
	var wg sync.WaitGroup
	for _, exec := range []bool{true, false} {
		p := Plugin{Type: "host-local", Config: conf, Path: bin, Timeout: 60 * time.Second, Exec: exec}
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cid := fmt.Sprintf("exec%v-%d", exec, i)
				res, err := p.Add(context.Background(), Call{ContainerID: cid, IfName: "eth0", Netns: "/var/run/netns/none"})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("%s: %v", cid, err)
					return
				}
				ip := res.IPs[0].Address.IP.String()
				if other, dup := got[ip]; dup {
					t.Errorf("%s given to both %s and %s", ip, other, cid)
				}
				got[ip] = cid
			}()
		}
	}
	wg.Wait()
	leases := 0
	for name := range harness.Files(t, filepath.Join(store, "vmnet")) {
		if name != "lock" && !strings.HasPrefix(name, "last_reserved_ip.") {
			leases++
		}
	}
	var ips []string
	for ip := range got {
		ips = append(ips, ip)
	}
	sort.Strings(ips)
	if len(got) != 2*n || leases != 2*n {
		t.Fatalf("%d distinct addresses, %d lease files, want %d of each", len(got), leases, 2*n)
	}
}

// The in-process host-local waits for the store's lock no longer than
// ipamTimeout (the binary would wait for good), and then takes nothing.
func TestHostLocalInProcessLockTimeout(t *testing.T) {
	store := t.TempDir()
	base := hostLocal("1.0.0", []map[string]any{r4("10.9.0.0/24", "", "")})
	base["ipam"].(map[string]any)["dataDir"] = store
	conf, _ := json.Marshal(base)
	if err := os.MkdirAll(filepath.Join(store, "vmnet"), 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(store, "vmnet", "lock"), os.O_CREATE|os.O_RDONLY, 0o750)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	p := Plugin{Type: "host-local", Config: conf, Timeout: 300 * time.Millisecond}
	start := time.Now()
	_, err = p.Add(context.Background(), Call{ContainerID: "c", IfName: "eth0", Netns: "/var/run/netns/none"})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Add with the store locked: %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Add returned after %s with a 300ms timeout", d)
	}
	if f := harness.Files(t, store); len(f) != 1 {
		t.Fatalf("store after a timed-out ADD: %v", f)
	}
}

// storeOf is a host-local config of one range in a store of its own:
// the store, the config, and the network's directory in the store (made).
func storeOf(t *testing.T, r map[string]any) (store string, conf []byte, dir string) {
	t.Helper()
	store = t.TempDir()
	base := hostLocal("1.0.0", []map[string]any{r})
	base["ipam"].(map[string]any)["dataDir"] = store
	conf, _ = json.Marshal(base)
	dir = filepath.Join(store, "vmnet")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return store, conf, dir
}

// A reservation torn by a kill (the address's file made, its owner not yet
// written) is taken back when the allocator reaches the address, and by
// any DEL; a file with an owner is never touched.
func TestHostLocalInProcessReclaimsTornReservation(t *testing.T) {
	store, conf, dir := storeOf(t, r4("10.9.0.0/24", "10.9.0.10", "10.9.0.12"))
	if err := os.WriteFile(filepath.Join(dir, "10.9.0.10"), nil, 0o644); err != nil { // torn
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "10.9.0.11"), []byte("other\neth0"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := Plugin{Type: "host-local", Config: conf, Timeout: 5 * time.Second}
	res, err := p.Add(context.Background(), Call{ContainerID: "c", IfName: "eth0", Netns: "/var/run/netns/none"})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.IPs[0].Address.IP.String(); got != "10.9.0.10" {
		t.Fatalf("ADD got %s, want the torn reservation's 10.9.0.10", got)
	}
	// DEL of any attachment takes back every torn reservation: a DEL after
	// a killed ADD must leave nothing, and a torn file names no owner.
	if err := os.WriteFile(filepath.Join(dir, "10.9.0.12"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.Del(context.Background(), Call{ContainerID: "gone", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	f := harness.Files(t, store)
	if _, ok := f["vmnet/10.9.0.12"]; ok {
		t.Errorf("DEL left the torn reservation of 10.9.0.12: %v", f)
	}
	if !strings.HasSuffix(f["vmnet/10.9.0.10"], `"c\r\neth0"`) || !strings.HasSuffix(f["vmnet/10.9.0.11"], `"other\neth0"`) {
		t.Fatalf("store: %v", f)
	}
}

// With what tapbridge knows of the attachment (a fresh claim on ADD, the
// complete record's addresses on DEL), in-process host-local reads no
// lease but the attachment's own: the call's cost does not grow with the
// node's attachments (DESIGN.md). The store holds a FIFO named like an
// address: reading it blocks until a writer comes, so a call that walks
// the store hangs there, which is how the test tells (and it checks that
// a call without the hints does hang, so the probe can fail).
func TestHostLocalKnownLeaseReadsNoOtherLease(t *testing.T) {
	_, conf, dir := storeOf(t, r4("10.9.0.0/24", "10.9.0.10", "10.9.0.20"))
	fifo := filepath.Join(dir, "10.9.0.99")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "10.9.0.15"), []byte("other\neth0"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := Plugin{Type: "host-local", Config: conf, Timeout: 5 * time.Second}
	// finish waits for a call, giving every read of the FIFO EOF, and says
	// whether the call had to read it (it was still running after wait).
	finish := func(done <-chan error, wait time.Duration) (err error, walked bool) {
		select {
		case err := <-done:
			return err, false
		case <-time.After(wait):
		}
		for {
			select {
			case err := <-done:
				return err, true
			default:
			}
			// A writer that comes and goes gives a blocked read EOF; with
			// no reader the open fails (ENXIO) and the call is not there yet.
			if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	start := func(fn func() error) <-chan error {
		done := make(chan error, 1)
		go func() { done <- fn() }()
		return done
	}
	within := func(what string, fn func() error) (error, bool) {
		err, walked := finish(start(fn), 5*time.Second)
		if walked {
			return fmt.Errorf("%s read the FIFO: it walked the store", what), false
		}
		return err, true
	}

	var res *current.Result
	err, ok := within("fresh ADD", func() (err error) {
		res, err = p.Add(context.Background(), Call{ContainerID: "c", IfName: "eth0", Netns: "/var/run/netns/none", Known: Known{Fresh: true}})
		return err
	})
	if err != nil || !ok {
		t.Fatal(err)
	}
	addr, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	if addr.String() != "10.9.0.10" {
		t.Fatalf("fresh ADD got %s, want 10.9.0.10", addr)
	}
	// A lease that names another owner stays, even when named.
	other := netip.MustParseAddr("10.9.0.15")
	err, ok = within("DEL with the lease", func() error {
		return p.Del(context.Background(), Call{ContainerID: "c", IfName: "eth0", Known: Known{Leased: []netip.Addr{addr, other}}})
	})
	if err != nil || !ok {
		t.Fatal(err)
	}
	// (Read file by file: harness.Files would block on the FIFO too.)
	if _, err := os.Stat(filepath.Join(dir, "10.9.0.10")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("DEL with the lease left the attachment's address: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "10.9.0.15")); string(b) != "other\neth0" {
		t.Errorf("DEL with the lease touched another owner's address: %q, %v", b, err)
	}

	// The probe: the binary's way (no hints) does walk, and hangs on it.
	for _, c := range []struct {
		what string
		fn   func() error
	}{
		{"ADD", func() error {
			_, err := p.Add(context.Background(), Call{ContainerID: "d", IfName: "eth0", Netns: "/var/run/netns/none"})
			return err
		}},
		{"DEL", func() error { return p.Del(context.Background(), Call{ContainerID: "d", IfName: "eth0"}) }},
	} {
		err, walked := finish(start(c.fn), 500*time.Millisecond)
		if !walked {
			t.Errorf("%s without the hints returned (%v) without reading the FIFO: the probe cannot fail", c.what, err)
		} else if err != nil {
			t.Errorf("%s without the hints, once the FIFO gave EOF: %v", c.what, err)
		}
	}
}
