package harness

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// IPAMDir is what host-local keeps in its dataDir.
type IPAMDir struct {
	Leases []Lease
	Files  []string // every file but host-local's lock and last_reserved_ip.* bookkeeping, relative
	Stray  []string // files that are not leases
}

// Lease is one IP host-local gave out.
type Lease struct {
	Network, IP, ContainerID, IfName string
}

// ReadIPAMDir reads host-local's dataDir; a missing one is empty.
func ReadIPAMDir(dir string) (IPAMDir, error) {
	var s IPAMDir
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || d.Name() == "lock" || strings.HasPrefix(d.Name(), "last_reserved_ip.") {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		s.Files = append(s.Files, rel)
		if _, err := netip.ParseAddr(d.Name()); err != nil {
			s.Stray = append(s.Stray, rel)
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		// host-local writes "<container ID>\r\n<ifname>".
		lines := strings.Split(strings.ReplaceAll(string(data), "\r", ""), "\n")
		l := Lease{Network: filepath.Base(filepath.Dir(path)), IP: d.Name(), ContainerID: lines[0]}
		if len(lines) > 1 {
			l.IfName = lines[1]
		}
		s.Leases = append(s.Leases, l)
		return nil
	})
	sort.Strings(s.Files)
	return s, err
}

// Of counts the leases of one container.
func (s IPAMDir) Of(containerID string) int {
	n := 0
	for _, l := range s.Leases {
		if l.ContainerID == containerID {
			n++
		}
	}
	return n
}

func (l Lease) String() string { return fmt.Sprintf("%s/%s/%s", l.Network, l.ContainerID, l.IfName) }
