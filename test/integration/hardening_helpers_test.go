package integration

// Helpers of the hardening tests (concurrency, crash, bad input, spoof).
// Package-level names start with "hd" so they never collide with helpers
// other test files of this package add.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tapbridge/tapbridge-cni/internal/attachment"
	"github.com/tapbridge/tapbridge-cni/internal/state"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

func hdReleaseBin() string    { return filepath.Join(pluginDir, "tapbridge-cni") }
func hdFailpointsBin() string { return filepath.Join(failpointsDir, "tapbridge-cni") }

// hdSet returns a conf mod that sets a dotted key ("ipam.ranges").
func hdSet(path string, v any) func(map[string]any) {
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

// hdTop returns a conf mod that sets a top-level key, dots and all.
func hdTop(key string, v any) func(map[string]any) {
	return func(c map[string]any) { c[key] = v }
}

// hdValid sets the GC valid-attachments list.
func hdValid(list []types.GCAttachment) func(map[string]any) {
	if list == nil {
		list = []types.GCAttachment{}
	}
	return hdTop("cni.dev/valid-attachments", list)
}

// hdDel returns a conf mod that removes a dotted key.
func hdDel(path string) func(map[string]any) {
	return func(c map[string]any) {
		keys := strings.Split(path, ".")
		m := c
		for _, k := range keys[:len(keys)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				return
			}
			m = next
		}
		delete(m, keys[len(keys)-1])
	}
}

// hdRange sets a one-range host-local pool.
func hdRange(subnet, start, end string) func(map[string]any) {
	return hdSet("ipam.ranges", [][]map[string]any{{{"subnet": subnet, "rangeStart": start, "rangeEnd": end}}})
}

// hdStatic sets this node's static host addresses.
func hdStatic(addrs ...string) func(map[string]any) {
	return hdSet("hostAddress.static", map[string]any{"node-a": addrs})
}

// hd is the hardening tests' view of a fixture: goroutine-safe exec,
// pods made from any goroutine, and a full check of the node against the
// set of attachments that should be live.
type hd struct {
	*fixture
	mu      sync.Mutex
	extra   []harness.Netns // pods made by hd.newPod (f.pod is not goroutine-safe)
	seq     int
	bridges []string // every bridge of the node the checks look at
}

func newHD(t *testing.T) *hd {
	t.Helper()
	h := &hd{fixture: newFixture(t), bridges: []string{harness.BridgeName}}
	t.Cleanup(func() {
		h.keepLog()
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, p := range h.extra {
			if err := p.Delete(); err != nil {
				t.Error(err)
			}
		}
	})
	return h
}

// keepLog saves the plugin's log of a failed test, which t.TempDir
// would remove, and says where.
func (h *hd) keepLog() {
	if !h.t.Failed() {
		return
	}
	data, err := os.ReadFile(filepath.Join(h.dir, "plugin.log"))
	if err != nil {
		return
	}
	name := filepath.Join(os.TempDir(), strings.NewReplacer("/", "_", " ", "_").Replace(h.t.Name())+"-"+h.node.ID+".log")
	if err := os.WriteFile(name, data, 0o644); err == nil {
		h.t.Logf("plugin log kept in %s", name)
	}
}

// call fills in the binary and CNI_PATH, runs c in the node's host netns
// and checks the protocol. Safe from any goroutine.
func (h *hd) call(c harness.Call) (harness.Outcome, error) {
	if c.Binary == "" {
		c.Binary = hdReleaseBin()
	}
	if c.Path == "" {
		c.Path = strings.Join(h.paths(filepath.Dir(c.Binary)), ":")
	}
	var out harness.Outcome
	err := h.node.Host.Do(func() error {
		var err error
		out, err = c.Run()
		return err
	})
	if err != nil {
		return out, fmt.Errorf("%s %s/%s: %w (stderr: %s)", c.Command, c.ContainerID, c.IfName, err, out.Stderr)
	}
	return out, nil
}

// mustCall is call for the test goroutine: a protocol violation is fatal.
func (h *hd) mustCall(c harness.Call) harness.Outcome {
	h.t.Helper()
	out, err := h.call(c)
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// newPod makes a pod netns from any goroutine; removed at cleanup.
func (h *hd) newPod() (harness.Netns, error) {
	h.mu.Lock()
	h.seq++
	name := fmt.Sprintf("%s-hp%d", h.node.ID, h.seq)
	h.mu.Unlock()
	p, err := harness.NewNetns(name)
	if err != nil {
		return p, err
	}
	h.mu.Lock()
	h.extra = append(h.extra, p)
	h.mu.Unlock()
	return p, nil
}

// pods makes n pod netns up front (from the test goroutine).
func (h *hd) pods(n int) []harness.Netns {
	h.t.Helper()
	out := make([]harness.Netns, n)
	for i := range out {
		p, err := h.newPod()
		if err != nil {
			h.t.Fatal(err)
		}
		out[i] = p
	}
	return out
}

// addBridge makes another admin bridge in the node's host netns.
func (h *hd) addBridge(name string) {
	h.t.Helper()
	err := h.node.Host.Do(func() error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge %s: %w", name, err)
		}
		return netlink.LinkSetUp(br)
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.bridges = append(h.bridges, name)
}

// hdAtt is one attachment the test expects to be live.
type hdAtt struct {
	CID, IfName string
	Network     string
	Bridge      string
	HostAddr    string // the host address its subnet needs, e.g. 10.77.0.250/24
	Pod         harness.Netns
	NoIPAM      bool // L2 only: no IPAM lease
}

func (a hdAtt) names() attachment.Names {
	return attachment.For(attachment.ID{ContainerID: a.CID, IfName: a.IfName})
}

// expectLive checks the whole node against the live set: host veths and
// their bridges, host addresses, records, host-address users, nft chains,
// IPAM files, pod devices, no torn state files and no lock held. pods are
// the pod netns to look into (their devices must be exactly those of the
// live attachments in them, else only lo).
func (h *hd) expectLive(live []hdAtt, pods []harness.Netns) {
	h.t.Helper()
	if err := h.liveErr(live, pods); err != nil {
		h.t.Fatal(err)
	}
}

// liveErr is expectLive for callers that must not stop the test at once.
func (h *hd) liveErr(live []hdAtt, pods []harness.Netns) error {
	var errs []error
	errs = append(errs, h.checkHost(live)...)
	errs = append(errs, h.checkState(live)...)
	errs = append(errs, h.checkIPAM(live)...)
	errs = append(errs, h.checkPods(live, pods)...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node does not match the %d live attachments:\n%w", len(live), err)
	}
	return nil
}

func (h *hd) checkHost(live []hdAtt) []error {
	var errs []error
	err := h.node.Host.Do(func() error {
		index := map[string]int{}
		wantAddrs := map[string]map[string]bool{}
		for _, b := range h.bridges {
			l, err := netlink.LinkByName(b)
			if err != nil {
				return err
			}
			index[b] = l.Attrs().Index
			wantAddrs[b] = map[string]bool{}
		}
		want := map[string]hdAtt{}
		for _, a := range live {
			want[a.names().HostIf] = a
			if a.HostAddr != "" {
				wantAddrs[a.Bridge][a.HostAddr] = true
			}
		}
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, l := range links {
			name := l.Attrs().Name
			if !strings.HasPrefix(name, "tb") {
				continue
			}
			seen[name] = true
			a, ok := want[name]
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("host veth %s belongs to no live attachment", name))
			case l.Attrs().MasterIndex != index[a.Bridge]:
				errs = append(errs, fmt.Errorf("host veth %s of %s is not a port of %s", name, a.CID, a.Bridge))
			}
		}
		for name, a := range want {
			if !seen[name] {
				errs = append(errs, fmt.Errorf("host veth %s of live %s/%s is missing", name, a.CID, a.IfName))
			}
		}
		for _, b := range h.bridges {
			got, err := hdBridgeAddrs(b)
			if err != nil {
				return err
			}
			if g, w := strings.Join(got, ","), strings.Join(hdKeys(wantAddrs[b]), ","); g != w {
				errs = append(errs, fmt.Errorf("bridge %s has addresses [%s], want [%s]", b, g, w))
			}
		}
		errs = append(errs, hdCheckNft(live)...)
		return nil
	})
	return append(errs, err)
}

// hdBridgeAddrs lists a bridge's addresses, link-local ones left out.
func hdBridgeAddrs(name string) ([]string, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, err
	}
	addrs, err := netlink.AddrList(l, unix.AF_UNSPEC)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range addrs {
		if !a.IP.IsLinkLocalUnicast() {
			out = append(out, a.IPNet.String())
		}
	}
	sort.Strings(out)
	return out, nil
}

// hdCheckNft: the anti-spoof tables are exactly one per live attachment,
// named after its host veth, each with its one chain.
func hdCheckNft(live []hdAtt) []error {
	c, err := nftables.New()
	if err != nil {
		return []error{err}
	}
	chains, err := c.ListChains()
	if err != nil {
		return []error{fmt.Errorf("list nft chains: %w", err)}
	}
	count := map[string]int{}
	for _, ch := range chains {
		if strings.HasPrefix(ch.Table.Name, "tapbridge-") {
			count[fmt.Sprintf("%s %s", familyName(ch.Table.Family), ch.Table.Name)]++
		}
	}
	var errs []error
	for _, a := range live {
		key := "netdev tapbridge-" + a.names().HostIf
		if got := count[key]; got != 1 {
			errs = append(errs, fmt.Errorf("nft table %s of %s/%s has %d chains, want 1", key, a.CID, a.IfName, got))
		}
		delete(count, key)
	}
	for key, n := range count {
		errs = append(errs, fmt.Errorf("nft table %s (%d chains) belongs to no live attachment", key, n))
	}
	return errs
}

func familyName(f nftables.TableFamily) string {
	if f == nftables.TableFamilyNetdev {
		return "netdev"
	}
	return fmt.Sprintf("family%d", f)
}

func hdKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// checkState: one record per live attachment, every state file whole, no
// *.tmp, the host-address users of each subnet are exactly the live
// attachments on it, and no lock is held.
func (h *hd) checkState(live []hdAtt) []error {
	var errs []error
	want := map[string]hdAtt{}
	users := map[string]bool{} // bridge/subnet/key
	for _, a := range live {
		k := a.names().Key
		want[k] = a
		if a.HostAddr != "" {
			p := netip.MustParsePrefix(a.HostAddr).Masked()
			users[a.Bridge+"/"+strings.ReplaceAll(p.String(), "/", "_")+"/"+k] = true
		}
	}
	got := map[string]bool{}
	gotUsers := map[string]bool{}
	err := filepath.WalkDir(h.stateDir(), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(h.stateDir(), path)
		parts := strings.Split(rel, string(filepath.Separator))
		if d.IsDir() {
			return nil
		}
		if strings.Contains(d.Name(), ".tmp") {
			errs = append(errs, fmt.Errorf("temporary file %s left in the state dir", rel))
		}
		switch {
		case len(parts) == 2 && parts[0] == "attachments":
			key := strings.TrimSuffix(parts[1], ".json")
			got[key] = true
			errs = append(errs, hdCheckRecord(path, want, key))
		case len(parts) == 6 && parts[0] == "bridges" && parts[2] == "subnets" && parts[4] == "users":
			gotUsers[parts[1]+"/"+parts[3]+"/"+parts[5]] = true
		case len(parts) == 5 && parts[0] == "bridges" && parts[2] == "subnets" && parts[4] == "owned":
			b, err := os.ReadFile(path)
			if err == nil {
				_, err = netip.ParsePrefix(strings.TrimSpace(string(b)))
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("owned file %s: %w", rel, err))
			}
		case len(parts) == 3 && parts[0] == "bridges" && parts[2] == "lock":
			errs = append(errs, hdLockFree(path))
		}
		return nil
	})
	errs = append(errs, err)
	for k, a := range want {
		if !got[k] {
			errs = append(errs, fmt.Errorf("no record for live %s/%s (%s)", a.CID, a.IfName, k))
		}
	}
	for u := range users {
		if !gotUsers[u] {
			errs = append(errs, fmt.Errorf("live attachment not counted as a host-address user: %s", u))
		}
	}
	for u := range gotUsers {
		if !users[u] {
			errs = append(errs, fmt.Errorf("host-address user of no live attachment: %s", u))
		}
	}
	return errs
}

func hdCheckRecord(path string, want map[string]hdAtt, key string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var rec state.Record
	if err := json.Unmarshal(data, &rec); err != nil {
		return fmt.Errorf("record %s does not parse: %w: %q", key, err, data)
	}
	a, ok := want[key]
	switch {
	case !ok:
		return fmt.Errorf("record %s (%s/%s) of no live attachment", key, rec.ContainerID, rec.IfName)
	case rec.ContainerID != a.CID || rec.IfName != a.IfName || rec.Bridge != a.Bridge || rec.Network != a.Network:
		return fmt.Errorf("record %s is %+v, want %+v", key, rec, a)
	}
	return nil
}

// hdLockFree fails if anyone holds the lock file (flock -n <file> true).
func hdLockFree(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("lock %s is held after every plugin exited: %w", path, err)
	}
	return unix.Flock(int(f.Fd()), unix.LOCK_UN)
}

// checkIPAM: host-local holds exactly one IP per live attachment, each
// file naming a live container.
func (h *hd) checkIPAM(live []hdAtt) []error {
	want := map[string]int{} // network/cid/ifname
	for _, a := range live {
		if !a.NoIPAM {
			want[a.Network+"/"+a.CID+"/"+a.IfName]++
		}
	}
	got := map[string]int{}
	var errs []error
	err := filepath.WalkDir(h.ipamDir(), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || d.Name() == "lock" || strings.HasPrefix(d.Name(), "last_reserved_ip.") {
			return nil
		}
		if _, err := netip.ParseAddr(d.Name()); err != nil {
			errs = append(errs, fmt.Errorf("unexpected file %s in the IPAM dir", path))
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		lines := strings.Split(strings.ReplaceAll(string(data), "\r", ""), "\n")
		ifname := ""
		if len(lines) > 1 {
			ifname = lines[1]
		}
		got[filepath.Base(filepath.Dir(path))+"/"+lines[0]+"/"+ifname]++
		return nil
	})
	errs = append(errs, err)
	for k, n := range got {
		if want[k] != n {
			errs = append(errs, fmt.Errorf("IPAM holds %d IPs for %s, want %d", n, k, want[k]))
		}
	}
	for k, n := range want {
		if got[k] != n {
			errs = append(errs, fmt.Errorf("IPAM holds %d IPs for live %s, want %d", got[k], k, n))
		}
	}
	return errs
}

// checkPods: each live attachment's pod holds its pod end and TAP (up);
// every other device of the given pods is lo.
func (h *hd) checkPods(live []hdAtt, pods []harness.Netns) []error {
	byPod := map[string][]hdAtt{}
	for _, a := range live {
		byPod[a.Pod.Name] = append(byPod[a.Pod.Name], a)
		if !hdContains(pods, a.Pod) {
			pods = append(pods, a.Pod)
		}
	}
	var errs []error
	for _, p := range pods {
		if _, err := os.Stat(p.Path()); err != nil {
			if len(byPod[p.Name]) > 0 {
				errs = append(errs, fmt.Errorf("pod %s of live attachments is gone", p.Name))
			}
			continue
		}
		want := map[string]bool{"lo": true}
		for _, a := range byPod[p.Name] {
			want[a.names().PodIf], want[a.names().Tap] = true, true
		}
		err := p.Do(func() error {
			links, err := netlink.LinkList()
			if err != nil {
				return err
			}
			got := map[string]bool{}
			for _, l := range links {
				got[l.Attrs().Name] = true
				if !want[l.Attrs().Name] {
					errs = append(errs, fmt.Errorf("pod %s has stray device %s (%s)", p.Name, l.Attrs().Name, l.Type()))
				}
			}
			for name := range want {
				if !got[name] {
					errs = append(errs, fmt.Errorf("pod %s lacks device %s", p.Name, name))
				}
			}
			return nil
		})
		errs = append(errs, err)
	}
	return errs
}

func hdContains(list []harness.Netns, p harness.Netns) bool {
	for _, q := range list {
		if q.Name == p.Name {
			return true
		}
	}
	return false
}

// hdProc is a plugin process started by a test, to be killed by PID.
type hdProc struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr bytes.Buffer
}

// start launches the plugin in the node's host netns in its own process
// group (so the test can wait for the IPAM child it leaves behind) and
// returns at once.
func (h *hd) start(c harness.Call, env ...string) (*hdProc, error) {
	if c.Binary == "" {
		c.Binary = hdReleaseBin()
	}
	if c.Path == "" {
		c.Path = strings.Join(h.paths(filepath.Dir(c.Binary)), ":")
	}
	p := &hdProc{}
	p.cmd = exec.Command(c.Binary)
	p.cmd.Env = append(hdEnv(c), env...)
	p.cmd.Stdin = bytes.NewReader(c.Stdin)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err := h.node.Host.Do(p.cmd.Start)
	return p, err
}

func hdEnv(c harness.Call) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "CNI_COMMAND=" + c.Command, "CNI_PATH=" + c.Path}
	for _, kv := range [][2]string{{"CNI_CONTAINERID", c.ContainerID}, {"CNI_NETNS", c.Netns}, {"CNI_IFNAME", c.IfName}, {"CNI_ARGS", c.Args}} {
		if kv[1] != "" {
			env = append(env, kv[0]+"="+kv[1])
		}
	}
	return append(env, c.Extra...)
}

// kill sends SIGKILL to the plugin (by PID, nothing else), reaps it, and
// waits until every process it started (IPAM) has finished on its own, so
// the next call does not race an orphan. It reports whether the plugin
// was still running when killed.
func (p *hdProc) kill() (killed bool, err error) {
	pid := p.cmd.Process.Pid
	kerr := p.cmd.Process.Kill()
	werr := p.cmd.Wait()
	killed = kerr == nil && !p.cmd.ProcessState.Success() && p.cmd.ProcessState.Sys().(syscall.WaitStatus).Signaled()
	if werr != nil && !killed {
		var exitErr *exec.ExitError
		if !errors.As(werr, &exitErr) {
			return false, werr
		}
	}
	return killed, hdWaitGroupGone(pid, 10*time.Second)
}

// hdWaitGroupGone waits until process group pgid has no member left.
func hdWaitGroupGone(pgid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		err := unix.Kill(-pgid, 0)
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of group %d still running after %s: %v", pgid, limit, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// hdCIDs returns n container IDs with a common prefix.
func hdCIDs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return out
}

// hdResultIP returns the first IP of an ADD's stdout.
func hdResultIP(t *testing.T, stdout []byte) string {
	t.Helper()
	var res struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
		Interfaces []struct {
			Name string `json:"name"`
		} `json:"interfaces"`
	}
	if err := json.Unmarshal(stdout, &res); err != nil || len(res.IPs) == 0 {
		t.Fatalf("ADD result without IPs (%v): %s", err, stdout)
	}
	return res.IPs[0].Address
}

// hdWithPrev adds prevResult (an ADD's stdout) to a config, for CHECK.
func hdWithPrev(t *testing.T, conf, prev []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	m["prevResult"] = json.RawMessage(prev)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// add, del and check run one verb of the release binary for a.
func (h *hd) add(conf []byte, a hdAtt, extra ...string) (harness.Outcome, error) {
	return h.call(harness.Call{Command: "ADD", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Stdin: conf, Extra: extra})
}

func (h *hd) del(conf []byte, a hdAtt) (harness.Outcome, error) {
	return h.call(harness.Call{Command: "DEL", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Stdin: conf})
}

func (h *hd) check(conf, prev []byte, a hdAtt) (harness.Outcome, error) {
	return h.call(harness.Call{Command: "CHECK", ContainerID: a.CID, Netns: a.Pod.Path(), IfName: a.IfName, Stdin: hdWithPrev(h.t, conf, prev)})
}

// hdParallel runs fn(0..n-1) in n goroutines released at once and
// returns their errors, indexed.
func hdParallel(n int, fn func(i int) error) []error {
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

// hdOK turns an outcome into an error unless it is rc 0.
func hdOK(out harness.Outcome, err error) error {
	if err != nil {
		return err
	}
	if out.RC != 0 {
		return fmt.Errorf("rc %d: %s", out.RC, out.Stdout)
	}
	return nil
}

// watchHostAddrs samples, while plugins run, that the bridge has exactly
// one address in each subnet that has users on disk, and none in the
// others (see sampleHostAddrs for how a sample stays consistent). stop
// reports the samples that counted and every violation seen.
func (h *hd) watchHostAddrs(bridge string, hostAddrs ...string) (stop func() (int, []error)) {
	h.t.Helper()
	nsh, err := netns.GetFromPath(h.node.Host.Path())
	if err != nil {
		h.t.Fatal(err)
	}
	nlh, err := netlink.NewHandleAt(nsh)
	nsh.Close()
	if err != nil {
		h.t.Fatal(err)
	}
	quit := make(chan struct{})
	var samples, skipped int
	var errs []error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-quit:
				return
			case <-time.After(10 * time.Millisecond):
			}
			counted, err := h.sampleHostAddrs(nlh, bridge, hostAddrs)
			if counted {
				samples++
			} else {
				skipped++
			}
			if err != nil && len(errs) < 20 {
				errs = append(errs, err)
			}
		}
	}()
	var once sync.Once
	stop = func() (int, []error) {
		once.Do(func() {
			close(quit)
			wg.Wait()
			nlh.Close()
			h.t.Logf("host-address watcher: %d samples, %d skipped (no lock file yet)", samples, skipped)
		})
		return samples, errs
	}
	h.t.Cleanup(func() { stop() }) // a test that stops early
	return stop
}

// hdUsersView is what one hold of the bridge lock reads: the hand-over
// counter and the number of users of each subnet.
type hdUsersView struct {
	turn  uint64
	users map[netip.Prefix]int
}

// hdHoldLock runs fn with the bridge lock held, as a plugin holds it.
func hdHoldLock(lock *os.File, fn func() error) error {
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	return fn()
}

// hdReadUsers reads the view; the caller holds the lock.
func hdReadUsers(lock *os.File, dir string, subnets []netip.Prefix) hdUsersView {
	v := hdUsersView{users: map[netip.Prefix]int{}}
	var b [8]byte
	if n, _ := lock.ReadAt(b[:], 0); n == len(b) {
		v.turn = binary.LittleEndian.Uint64(b[:])
	}
	for _, s := range subnets {
		users, _ := os.ReadDir(filepath.Join(dir, "subnets", strings.ReplaceAll(s.String(), "/", "_"), "users"))
		v.users[s] = len(users)
	}
	return v
}

// sampleHostAddrs checks once; it reports whether the sample counted.
// First without the lock across the netlink read, so the watcher does not
// stall the plugins behind a busy RTNL; when a plugin took the lock in
// between (as it always may in a dense burst), once more with the lock
// held throughout, so every call yields a sample.
func (h *hd) sampleHostAddrs(nlh *netlink.Handle, bridge string, hostAddrs []string) (bool, error) {
	dir := filepath.Join(h.stateDir(), "bridges", bridge)
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	var subnets []netip.Prefix
	for _, ha := range hostAddrs {
		subnets = append(subnets, netip.MustParsePrefix(ha).Masked())
	}
	var before, after hdUsersView
	if err := hdHoldLock(f, func() error { before = hdReadUsers(f, dir, subnets); return nil }); err != nil {
		return false, err
	}
	list, err := hdBridgeAddrList(nlh, bridge)
	if err != nil {
		return false, err
	}
	if err := hdHoldLock(f, func() error { after = hdReadUsers(f, dir, subnets); return nil }); err != nil {
		return false, err
	}
	if after.turn != before.turn {
		err := hdHoldLock(f, func() (err error) {
			before = hdReadUsers(f, dir, subnets)
			list, err = hdBridgeAddrList(nlh, bridge)
			return err
		})
		if err != nil {
			return false, err
		}
	}
	var errs []error
	for _, s := range subnets {
		n := 0
		for _, a := range list {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && s.Contains(ip.Unmap()) {
				n++
			}
		}
		want := min(before.users[s], 1)
		if n != want {
			errs = append(errs, fmt.Errorf("%d users of %s on disk but %d addresses in it on %s", before.users[s], s, n, bridge))
		}
	}
	return true, errors.Join(errs...)
}

func hdBridgeAddrList(nlh *netlink.Handle, bridge string) ([]netlink.Addr, error) {
	l, err := nlh.LinkByName(bridge)
	if err != nil {
		return nil, err
	}
	return nlh.AddrList(l, unix.AF_UNSPEC)
}

// wait waits for a started plugin to exit by itself and for the
// processes it started; limit bounds the wait (then it is killed and
// the error says so).
func (p *hdProc) wait(limit time.Duration) (rc int, err error) {
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(limit):
		_ = p.cmd.Process.Kill()
		<-done
		return -1, fmt.Errorf("%s did not exit within %s (killed)", p.cmd.Path, limit)
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return -1, err
	}
	return p.cmd.ProcessState.ExitCode(), hdWaitGroupGone(p.cmd.Process.Pid, 10*time.Second)
}

// stateSane checks what must hold in the state dir at any instant, even
// right after a crash: every file whole and parseable, no *.tmp, no lock
// held once every plugin has exited.
func (h *hd) stateSane() error {
	var errs []error
	err := filepath.WalkDir(h.stateDir(), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(h.stateDir(), path)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		switch {
		case strings.Contains(d.Name(), ".tmp"):
			errs = append(errs, fmt.Errorf("temporary file %s in the state dir", rel))
		case strings.HasSuffix(d.Name(), ".json"):
			var rec state.Record
			if err := json.Unmarshal(data, &rec); err != nil || rec.ContainerID == "" {
				errs = append(errs, fmt.Errorf("record %s does not parse (%v): %q", rel, err, data))
			}
		case d.Name() == "owned":
			if _, err := netip.ParsePrefix(strings.TrimSpace(string(data))); err != nil {
				errs = append(errs, fmt.Errorf("owned address %s does not parse: %q", rel, data))
			}
		case d.Name() == "lock":
			errs = append(errs, hdLockFree(path))
		case len(data) != 0:
			errs = append(errs, fmt.Errorf("set member %s is not empty: %q", rel, data))
		}
		return nil
	})
	return errors.Join(append(errs, err)...)
}

// hdStub writes an IPAM plugin script called name into a new directory
// and returns the directory (to put first in CNI_PATH).
func hdStub(t *testing.T, name, script string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// waitIPAMOrphan waits until no process of the attachment's IPAM ADD is
// left. IPAM runs alongside the pod-side steps, so a crash in one of them
// leaves the IPAM plugin to finish on its own, as any crash during IPAM
// always did; a snapshot taken before it ends would race it.
func waitIPAMOrphan(t *testing.T, cid string) {
	t.Helper()
	needle := []byte("\x00CNI_CONTAINERID=" + cid + "\x00")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if !processWithEnv(needle) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a process of container %s is still running 10s after the crash", cid)
		}
	}
}

func processWithEnv(needle []byte) bool {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if d.Name()[0] < '0' || d.Name()[0] > '9' {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		if err == nil && bytes.Contains(append(append([]byte{0}, env...), 0), needle) {
			return true
		}
	}
	return false
}
