package guest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// TestEnsureImageConcurrent builds an image in a fresh cache from two
// goroutines at once (the kernel package is copied from the default cache
// so that no download is needed): both get the same complete image, and
// no build leftovers remain.
func TestEnsureImageConcurrent(t *testing.T) {
	harness.RequireRoot(t)
	testImage(t) // fills the default cache, including debs/
	debs, _ := filepath.Glob(filepath.Join(DefaultCacheDir(), "debs", "*.deb"))
	if len(debs) == 0 {
		t.Skip("no cached kernel package to seed the cache with")
	}
	cache := t.TempDir()
	if err := os.Mkdir(filepath.Join(cache, "debs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(debs[0], filepath.Join(cache, "debs", filepath.Base(debs[0]))); err != nil {
		if err := copyFile(debs[0], filepath.Join(cache, "debs", filepath.Base(debs[0])), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	imgs := make([]Image, 2)
	errs := make([]error, 2)
	start := time.Now()
	for i := range imgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			imgs[i], errs[i] = EnsureImage(ctx, cache)
		}()
	}
	wg.Wait()
	t.Logf("two concurrent EnsureImage calls took %v", time.Since(start).Round(time.Millisecond))
	for i, err := range errs {
		if err != nil {
			t.Fatalf("EnsureImage %d: %v", i, err)
		}
	}
	if imgs[0] != imgs[1] || !imageComplete(imgs[0]) {
		t.Fatalf("EnsureImage results differ or are incomplete: %+v", imgs)
	}
	entries, _ := os.ReadDir(cache)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != ".lock debs image-"+imageKey() {
		t.Errorf("cache holds %q", got)
	}
}

// TestInitramfsContents lists the built initramfs with cpio and checks
// that what /init needs is there.
func TestInitramfsContents(t *testing.T) {
	harness.RequireRoot(t)
	img := testImage(t)
	data, err := os.ReadFile(img.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", "gzip -dc | cpio -it --quiet")
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("list initramfs: %v\n%s", err, out)
	}
	have := map[string]bool{}
	for _, l := range strings.Fields(string(out)) {
		have[l] = true
	}
	for _, want := range []string{"init", "bin/busybox", "bin/sh", "dev/console", "etc/tb-modules",
		"lib/modules/virtio_net.ko", "lib/modules/virtio_pci.ko", "usr/bin/nc", "sbin/insmod",
		"sbin/udhcpc", "sbin/dhclient", "etc/tb/udhcpc.sh", "etc/tb/dhclient.sh", "lib64/ld-linux-x86-64.so.2"} {
		if !have[want] {
			t.Errorf("initramfs lacks %s", want)
		}
	}
}
