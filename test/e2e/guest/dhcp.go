package guest

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// The guest's DHCP clients (tb.dhcp=1, tb.dhcp6=1): busybox's udhcpc for
// IPv4, and for DHCPv6 Debian's dhclient (isc-dhcp-client), a real
// client that scripts/deps/dhcp-client.sh unpacks under build/. dhclient
// is dynamically linked, so the image carries it with the libraries ldd
// names, at their own paths. Each client runs a script of ours that
// applies what it got and prints it on the console (TBDHCP4, TBDHCP6).

//go:embed udhcpc.sh
var udhcpcScript string

//go:embed dhclient.sh
var dhclientScript string

// dhclientRel is where scripts/deps/dhcp-client.sh unpacks dhclient,
// relative to the repository.
const dhclientRel = "build/dhcp-client/sbin/dhclient"

// imageFile is a file the image builder adds to the initramfs.
type imageFile struct {
	name string // path inside the initramfs, without the leading /
	mode uint32
	data []byte
}

// repoRoot is the repository this package is in (the package is only
// ever built from a checkout: it is test code).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

func dhclientPath() string { return filepath.Join(repoRoot(), dhclientRel) }

// ensureDHClient unpacks dhclient with the repository's deps script when
// it is not there yet (a checkout where `make deps` has not run).
func ensureDHClient(ctx context.Context) (string, error) {
	p := dhclientPath()
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	script := filepath.Join(repoRoot(), "scripts", "deps", "dhcp-client.sh")
	if err := run(ctx, repoRoot(), script); err != nil {
		return "", fmt.Errorf("unpack the guest's DHCPv6 client: %w", err)
	}
	return p, nil
}

// dhcpFiles are the clients' scripts and dhclient with its libraries.
func dhcpFiles(ctx context.Context) ([]imageFile, error) {
	p, err := ensureDHClient(ctx)
	if err != nil {
		return nil, err
	}
	files, err := withLibraries(ctx, p, "sbin/dhclient")
	if err != nil {
		return nil, err
	}
	return append(files,
		imageFile{name: "etc/tb/udhcpc.sh", mode: 0o755, data: []byte(udhcpcScript)},
		imageFile{name: "etc/tb/dhclient.sh", mode: 0o755, data: []byte(dhclientScript)},
	), nil
}

// withLibraries returns the binary at p (as name) and every library ldd
// resolves for it, the dynamic loader included, each at its path on this
// machine (the content, symlinks followed).
func withLibraries(ctx context.Context, p, name string) ([]imageFile, error) {
	bin, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	out, err := output(ctx, "", "ldd", p)
	if err != nil {
		return nil, fmt.Errorf("libraries of %s: %w", p, err)
	}
	files := []imageFile{{name: name, mode: 0o755, data: bin}}
	libs, err := lddPaths(out)
	if err != nil {
		return nil, fmt.Errorf("libraries of %s: %w", p, err)
	}
	for _, lib := range libs {
		data, err := os.ReadFile(lib)
		if err != nil {
			return nil, fmt.Errorf("read %s (needed by %s): %w", lib, p, err)
		}
		files = append(files, imageFile{name: strings.TrimPrefix(lib, "/"), mode: 0o755, data: data})
	}
	return files, nil
}

// lddPaths reads ldd's output: "libc.so.6 => /lib/…/libc.so.6 (0x…)" and
// "/lib64/ld-linux-x86-64.so.2 (0x…)" name files; the vDSO names none;
// "not found" is an error.
func lddPaths(out []byte) ([]string, error) {
	var paths []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 3 && f[1] == "=>" && f[2] == "not":
			return nil, fmt.Errorf("%s not found", f[0])
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			paths = append(paths, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			paths = append(paths, f[0])
		}
	}
	return paths, sc.Err()
}
