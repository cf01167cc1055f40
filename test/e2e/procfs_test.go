package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// expectOpenedByQEMUUser proves that the TAP was opened by uid 107 and
// not by root: libvirtd and the domain's QEMU run as 107:107 with no
// capabilities at all, QEMU holds exactly queues fds attached to tap, and
// each was opened through the launcher's own /dev/net/tun (the mount the
// launcher made), so no process outside it handed them over.
func expectOpenedByQEMUUser(t *testing.T, l *launcher, name, tap string, queues int) {
	t.Helper()
	qemu := l.qemus[name]
	for what, pid := range map[string]int{"libvirtd": l.PID(), "qemu": qemu} {
		st, err := procStatus(pid)
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Repeat(strconv.Itoa(qemuUID)+"\t", 3) + strconv.Itoa(qemuUID)
		if st["Uid"] != want || st["Gid"] != want || st["CapEff"] != "0000000000000000" || st["CapPrm"] != "0000000000000000" {
			t.Errorf("%s %d runs as Uid %q Gid %q CapPrm %s CapEff %s, want uid/gid %d and no capabilities",
				what, pid, st["Uid"], st["Gid"], st["CapPrm"], st["CapEff"], qemuUID)
		}
	}
	tunMount, err := mountID(qemu, "/dev/net")
	if err != nil {
		t.Fatal(err)
	}
	fds, err := tunFDs(qemu)
	if err != nil {
		t.Fatal(err)
	}
	var attached []string
	for _, f := range fds {
		if f.iff != tap {
			continue
		}
		attached = append(attached, strconv.Itoa(f.fd))
		if f.mount != tunMount {
			t.Errorf("qemu %d fd %d on %s was opened through mount %d, not the launcher's /dev/net (%d)", qemu, f.fd, tap, f.mount, tunMount)
		}
	}
	if len(attached) != queues {
		t.Errorf("qemu %d holds %d queues of %s (fds %v), want %d", qemu, len(attached), tap, attached, queues)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", qemu))
	for _, arg := range strings.Split(string(cmdline), "\x00") {
		if strings.Contains(arg, `"type":"tap"`) {
			t.Logf("qemu %d (uid %d) -netdev %s: fds %v attached to %s, opened by libvirtd as uid %d", qemu, qemuUID, arg, attached, tap, qemuUID)
		}
	}
}

// expectNICFromPod: QEMU's virtio-net device has the MAC and the MTU
// (host_mtu, which the guest adopts) that the domain copied from the pod
// interface.
func expectNICFromPod(t *testing.T, l *launcher, d domain) {
	t.Helper()
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", l.qemus[d.Name]))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{fmt.Sprintf(`"mac":"%s"`, d.MAC), fmt.Sprintf(`"host_mtu":%d`, d.MTU)}
	for _, arg := range strings.Split(string(cmdline), "\x00") {
		if strings.Contains(arg, `"driver":"virtio-net-pci`) {
			for _, w := range want {
				if !strings.Contains(arg, w) {
					t.Errorf("qemu's NIC %s lacks %s", arg, w)
				}
			}
			return
		}
	}
	t.Errorf("qemu %d has no virtio-net-pci device: %q", l.qemus[d.Name], cmdline)
}

// procStatus reads /proc/<pid>/status into key → value.
func procStatus(pid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out, nil
}

// tunFD is an fd of a process open on a tun device.
type tunFD struct {
	fd    int
	iff   string // the interface the fd is attached to (fdinfo "iff:")
	mount int    // the mount the device node was opened through
}

func tunFDs(pid int) ([]tunFD, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []tunFD
	for _, e := range entries {
		if target, _ := os.Readlink(filepath.Join(dir, e.Name())); target != "/dev/net/tun" {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
		if err != nil {
			return nil, err
		}
		f := tunFD{}
		f.fd, _ = strconv.Atoi(e.Name())
		for _, line := range strings.Split(string(info), "\n") {
			k, v, _ := strings.Cut(line, ":")
			switch k {
			case "iff":
				f.iff = strings.TrimSpace(v)
			case "mnt_id":
				f.mount, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		out = append(out, f)
	}
	return out, nil
}

// mountID is the id of the topmost mount at mountpoint in pid's mount
// namespace.
func mountID(pid int, mountpoint string) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return 0, err
	}
	id := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == mountpoint {
			id, _ = strconv.Atoi(f[0])
		}
	}
	if id == 0 {
		return 0, fmt.Errorf("no mount at %s for pid %d", mountpoint, pid)
	}
	return id, nil
}

// qemuPIDsOf lists the processes running QEMU for domain name.
func qemuPIDsOf(name string) []int {
	var pids []int
	for _, pid := range allPIDs() {
		if processAlive(pid, name) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pidsInNetns lists the processes whose network namespace is the one
// bound at path.
func pidsInNetns(path string) ([]int, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("stat netns %s: %w", path, err)
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	var pids []int
	for _, pid := range allPIDs() {
		if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); ns == want {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

func allPIDs() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// rootNS is the netns the test binary started in, the machine's root
// netns, opened before any test moves a thread (PID 1's is not readable
// here).
var rootNS, rootNSErr = netns.GetFromPath("/proc/self/ns/net")

// rootNetnsState lists the links ("link <name>") and nftables tables
// ("nft <family> <name>") of the root netns, through netlink sockets
// opened there, so no thread of the test moves.
func rootNetnsState() ([]string, error) {
	if rootNSErr != nil {
		return nil, fmt.Errorf("open the root netns: %w", rootNSErr)
	}
	h, err := netlink.NewHandleAt(rootNS)
	if err != nil {
		return nil, fmt.Errorf("netlink in the root netns: %w", err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list root netns links: %w", err)
	}
	var out []string
	for _, l := range links {
		out = append(out, "link "+l.Attrs().Name)
	}
	tables, err := nftTables(rootNS)
	return append(out, tables...), err
}

// nftTables lists the nftables tables of a netns as "nft <family> <name>".
func nftTables(ns netns.NsHandle) ([]string, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	tables, err := c.ListTables()
	if err != nil {
		return nil, fmt.Errorf("list nft tables: %w", err)
	}
	var out []string
	for _, t := range tables {
		out = append(out, fmt.Sprintf("nft %d %s", t.Family, t.Name))
	}
	return out, nil
}

// podNftTables lists the nftables tables of the pod netns at path.
func podNftTables(path string) ([]string, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	defer ns.Close()
	return nftTables(ns)
}
