package guest

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// kernelPackages are the Debian metapackages tried in order: the cloud
// flavour is small and has everything a virtio guest needs.
var kernelPackages = []string{"linux-image-cloud-amd64", "linux-image-amd64"}

// virtioNetModules are what eth0 needs; their dependencies (virtio,
// virtio_ring, net_failover, …) are added from the module metadata.
// Those built into the kernel are skipped.
var virtioNetModules = []string{"virtio_pci", "virtio_net"}

type kernelFiles struct {
	version string // e.g. 6.1.0-56-cloud-amd64
	vmlinuz string
	modDir  string // lib/modules/<version>
}

type module struct {
	name string // as insmod/lsmod know it, with underscores
	path string // may end in .ko, .ko.xz or .ko.zst
}

// kernelDeb returns a downloaded kernel package in debDir, downloading it
// the first time. A package from an earlier build is reused as is, so that
// rebuilding the image (e.g. after init.sh changed) needs no network.
func kernelDeb(ctx context.Context, debDir string) (string, error) {
	if found, _ := filepath.Glob(filepath.Join(debDir, "linux-image-*.deb")); len(found) > 0 {
		sort.Strings(found)
		return found[len(found)-1], nil
	}
	pkg, err := resolveKernelPackage(ctx)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(debDir, 0o755); err != nil {
		return "", fmt.Errorf("create deb dir: %w", err)
	}
	tmp, err := os.MkdirTemp(debDir, ".download-")
	if err != nil {
		return "", fmt.Errorf("create download dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	// As root, apt drops to the _apt user to download, which cannot write
	// into our private temp dir; let it download as root instead.
	if err := run(ctx, tmp, "apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg); err != nil {
		return "", fmt.Errorf("download kernel: %w", err)
	}
	got, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(got) != 1 {
		return "", fmt.Errorf("download kernel: expected one .deb for %s, got %d", pkg, len(got))
	}
	dest := filepath.Join(debDir, filepath.Base(got[0]))
	if err := os.Rename(got[0], dest); err != nil {
		return "", fmt.Errorf("store kernel package: %w", err)
	}
	return dest, nil
}

// resolveKernelPackage maps the first available metapackage to the real
// linux-image-<version>-<flavour> package it depends on, refreshing the
// apt lists once if none is known.
func resolveKernelPackage(ctx context.Context) (string, error) {
	for attempt := 0; attempt < 2; attempt++ {
		for _, meta := range kernelPackages {
			if pkg := kernelDependency(ctx, meta); pkg != "" {
				return pkg, nil
			}
		}
		if attempt == 0 {
			if err := run(ctx, "", "apt-get", "update", "-q"); err != nil {
				return "", fmt.Errorf("refresh apt lists: %w", err)
			}
		}
	}
	return "", fmt.Errorf("resolve kernel package: none of %v is known to apt", kernelPackages)
}

// kernelDependency returns the linux-image-* package that meta depends on,
// or "" when apt does not know meta.
func kernelDependency(ctx context.Context, meta string) string {
	out, err := output(ctx, "", "apt-cache", "depends", "--important", meta)
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		dep, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Depends: ")
		if ok && strings.HasPrefix(dep, "linux-image-") && dep != meta {
			return dep
		}
	}
	return ""
}

// findKernel locates the kernel image and module tree in an extracted
// kernel package (modules live in lib/ or, merged-usr, in usr/lib/).
func findKernel(root string) (kernelFiles, error) {
	found, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(found) != 1 {
		return kernelFiles{}, fmt.Errorf("find kernel: expected one boot/vmlinuz-*, got %d", len(found))
	}
	k := kernelFiles{vmlinuz: found[0], version: strings.TrimPrefix(filepath.Base(found[0]), "vmlinuz-")}
	for _, lib := range []string{"lib", "usr/lib"} {
		dir := filepath.Join(root, lib, "modules", k.version)
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			k.modDir = dir
			return k, nil
		}
	}
	return kernelFiles{}, fmt.Errorf("find kernel: no module tree for %s", k.version)
}

// resolveModules returns the modules needed to load roots, dependencies
// first, leaving out those built into the kernel. Dependencies come from
// modules.dep when the package has one (it usually does not: depmod
// writes it at install time), else from each module's .modinfo section.
func resolveModules(ctx context.Context, modDir string, roots []string) ([]module, error) {
	r := &modResolver{ctx: ctx, modDir: modDir, seen: map[string]bool{}}
	if err := r.load(); err != nil {
		return nil, err
	}
	for _, name := range roots {
		if err := r.add(name); err != nil {
			return nil, err
		}
	}
	return r.order, nil
}

type modResolver struct {
	ctx     context.Context
	modDir  string
	builtin map[string]bool
	paths   map[string]string   // module name -> file
	deps    map[string][]string // from modules.dep, if present
	seen    map[string]bool
	order   []module
}

func (r *modResolver) load() error {
	r.paths = map[string]string{}
	err := filepath.WalkDir(filepath.Join(r.modDir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if name, ok := moduleName(p); ok {
				r.paths[name] = p
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("list modules: %w", err)
	}
	if r.builtin, err = readModuleList(filepath.Join(r.modDir, "modules.builtin")); err != nil {
		return err
	}
	r.deps, err = readModulesDep(filepath.Join(r.modDir, "modules.dep"))
	return err
}

// add appends name after its dependencies, depth first.
func (r *modResolver) add(name string) error {
	if r.builtin[name] || r.seen[name] {
		return nil
	}
	r.seen[name] = true
	path, ok := r.paths[name]
	if !ok {
		return fmt.Errorf("module %s is neither built in nor shipped", name)
	}
	deps, ok := r.deps[name]
	if !ok {
		var err error
		if deps, err = modinfoDepends(r.ctx, path); err != nil {
			return err
		}
	}
	for _, d := range deps {
		if err := r.add(d); err != nil {
			return fmt.Errorf("dependency of %s: %w", name, err)
		}
	}
	r.order = append(r.order, module{name: name, path: path})
	return nil
}

// moduleName turns ".../virtio-net.ko.xz" into "virtio_net".
func moduleName(path string) (string, bool) {
	base := filepath.Base(path)
	i := strings.Index(base, ".ko")
	if i <= 0 || !(base[i:] == ".ko" || strings.HasPrefix(base[i:], ".ko.")) {
		return "", false
	}
	return strings.ReplaceAll(base[:i], "-", "_"), true
}

// readModuleList reads modules.builtin (one module path a line).
func readModuleList(path string) (map[string]bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return map[string]bool{}, nil
		}
		return nil, fmt.Errorf("read %s: %w", filepath.Base(path), err)
	}
	set := map[string]bool{}
	for _, line := range strings.Fields(string(data)) {
		if name, ok := moduleName(line); ok {
			set[name] = true
		}
	}
	return set, nil
}

// readModulesDep parses "kernel/a.ko: kernel/b.ko kernel/c.ko" lines; a
// missing file yields an empty map.
func readModulesDep(path string) (map[string][]string, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return map[string][]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(string(data), "\n") {
		mod, rest, ok := strings.Cut(line, ":")
		name, isMod := moduleName(mod)
		if !ok || !isMod {
			continue
		}
		deps[name] = []string{}
		for _, d := range strings.Fields(rest) {
			if dn, ok := moduleName(d); ok {
				deps[name] = append(deps[name], dn)
			}
		}
	}
	return deps, nil
}

// modinfoDepends reads the "depends=" entry of a module's .modinfo.
func modinfoDepends(ctx context.Context, path string) ([]string, error) {
	data, err := moduleBytes(ctx, path)
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Base(path), err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("parse %s: no .modinfo section", filepath.Base(path))
	}
	info, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read .modinfo of %s: %w", filepath.Base(path), err)
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, strings.ReplaceAll(d, "-", "_"))
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}

// moduleBytes returns a module's ELF, decompressed: busybox insmod loads
// plain .ko files only.
func moduleBytes(ctx context.Context, path string) ([]byte, error) {
	var data []byte
	var err error
	switch {
	case strings.HasSuffix(path, ".ko.xz"):
		data, err = output(ctx, "", "xz", "-dc", path)
	case strings.HasSuffix(path, ".ko.zst"):
		data, err = output(ctx, "", "zstd", "-dcq", path)
	case strings.HasSuffix(path, ".ko.gz"):
		data, err = output(ctx, "", "gzip", "-dc", path)
	default:
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", filepath.Base(path), err)
	}
	return data, nil
}
