package guest

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// imageFormat names the layout of a built image. Bump it when the builder
// changes what goes into the image in a way init.sh does not show, so that
// caches built by older code are not reused.
const imageFormat = "tbguest-2"

// CacheDirEnv overrides DefaultCacheDir.
const CacheDirEnv = "TAPBRIDGE_GUEST_CACHE"

//go:embed init.sh
var initScript string

//go:embed install-deps.sh
var installDepsScript string

// Image is a bootable guest: a kernel and its initramfs.
type Image struct {
	Kernel string // bzImage
	Initrd string // gzip-compressed newc cpio archive
}

// DefaultCacheDir is $TAPBRIDGE_GUEST_CACHE, else <repo>/build/guest where
// <repo> is the nearest directory above the working directory that holds a
// go.mod (build/ is git-ignored), else a folder in the temp dir.
func DefaultCacheDir() string {
	if dir := os.Getenv(CacheDirEnv); dir != "" {
		return dir
	}
	if dir, err := os.Getwd(); err == nil {
		for ; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return filepath.Join(dir, "build", "guest")
			}
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	return filepath.Join(os.TempDir(), "tapbridge-guest")
}

// EnsureImage returns the guest image cached in cacheDir (DefaultCacheDir
// when empty), building it first if needed. Building downloads a Debian
// kernel package with apt-get, so it needs root the first time. Concurrent
// callers, in this process or others, serialise on a lock file in cacheDir
// and the image directory appears atomically, complete or not at all.
func EnsureImage(ctx context.Context, cacheDir string) (Image, error) {
	if cacheDir == "" {
		cacheDir = DefaultCacheDir()
	}
	// dhclient is part of the key, so it is unpacked first.
	if _, err := ensureDHClient(ctx); err != nil {
		return Image{}, err
	}
	dir := filepath.Join(cacheDir, "image-"+imageKey())
	img := Image{Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img")}
	if imageComplete(img) {
		return img, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return Image{}, fmt.Errorf("create cache dir: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(cacheDir, ".lock"))
	if err != nil {
		return Image{}, err
	}
	defer unlock()
	// Another process may have finished the build while we waited.
	if imageComplete(img) {
		return img, nil
	}
	if err := InstallDeps(ctx); err != nil {
		return Image{}, err
	}
	if err := buildImage(ctx, cacheDir, dir); err != nil {
		return Image{}, fmt.Errorf("build guest image in %s: %w", cacheDir, err)
	}
	return img, nil
}

// InstallDeps installs the host tools this package uses (QEMU,
// busybox-static, cpio, xz, zstd) with apt-get when some are missing; see
// install-deps.sh. It is a quick no-op when everything is there.
func InstallDeps(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "bash", "-c", installDepsScript, "install-deps.sh")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("install host tools: %w\n%s", err, out)
	}
	return nil
}

// imageKey changes whenever the content of a built image would: the
// scripts, and dhclient as unpacked (a Debian update changes it).
func imageKey() string {
	h := sha256.New()
	for _, s := range []string{imageFormat, initScript, udhcpcScript, dhclientScript} {
		h.Write([]byte(s + "\x00"))
	}
	if f, err := os.Open(dhclientPath()); err == nil {
		_, _ = io.Copy(h, f)
		f.Close()
	}
	return hex.EncodeToString(h.Sum(nil)[:6])
}

func imageComplete(img Image) bool {
	for _, p := range []string{img.Kernel, img.Initrd} {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			return false
		}
	}
	return true
}

// lockFile takes an exclusive flock on path, polling so that ctx can
// interrupt the wait. The returned func releases it.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for lock %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// buildImage builds the image in a temporary directory inside cacheDir and
// renames it to dest, so dest is never seen half-written.
func buildImage(ctx context.Context, cacheDir, dest string) error {
	tmp, err := os.MkdirTemp(cacheDir, ".build-")
	if err != nil {
		return fmt.Errorf("create build dir: %w", err)
	}
	defer os.RemoveAll(tmp)

	deb, err := kernelDeb(ctx, filepath.Join(cacheDir, "debs"))
	if err != nil {
		return err
	}
	root := filepath.Join(tmp, "deb")
	if err := run(ctx, "", "dpkg-deb", "-x", deb, root); err != nil {
		return fmt.Errorf("extract %s: %w", filepath.Base(deb), err)
	}
	k, err := findKernel(root)
	if err != nil {
		return err
	}
	mods, err := resolveModules(ctx, k.modDir, virtioNetModules)
	if err != nil {
		return fmt.Errorf("resolve virtio-net modules of %s: %w", k.version, err)
	}

	dhcp, err := dhcpFiles(ctx)
	if err != nil {
		return err
	}

	out := filepath.Join(tmp, "image")
	if err := os.Mkdir(out, 0o755); err != nil {
		return fmt.Errorf("create image dir: %w", err)
	}
	if err := copyFile(k.vmlinuz, filepath.Join(out, "vmlinuz"), 0o644); err != nil {
		return err
	}
	if err := writeInitramfs(ctx, filepath.Join(out, "initrd.img"), busyboxPath, mods, dhcp); err != nil {
		return err
	}
	if err := writeInfo(filepath.Join(out, "info.txt"), deb, k, mods); err != nil {
		return err
	}
	if err := os.Rename(out, dest); err != nil {
		return fmt.Errorf("move image into place: %w", err)
	}
	return nil
}

// writeInfo records what went into an image, for people looking at the cache.
func writeInfo(path, deb string, k kernelFiles, mods []module) error {
	var names []string
	for _, m := range mods {
		names = append(names, m.name)
	}
	info := fmt.Sprintf("format: %s\npackage: %s\nkernel: %s\nmodules: %s\n",
		imageFormat, filepath.Base(deb), k.version, strings.Join(names, " "))
	if err := os.WriteFile(path, []byte(info), 0o644); err != nil {
		return fmt.Errorf("write image info: %w", err)
	}
	return nil
}

// run runs a command in dir and includes its output in the error.
func run(ctx context.Context, dir, name string, args ...string) error {
	_, err := output(ctx, dir, name, args...)
	return err
}

// output runs a command in dir and returns its stdout; on failure the
// error carries stderr.
func output(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	// The umask may have narrowed mode; QEMU reads these as uid 107.
	return os.Chmod(dst, mode)
}
