package cri

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// pauseImage is the sandbox image's name: containerd's CRI finds it in
// its own image store (imported with ctr), so it never tries a registry.
const pauseImage = "tapbridge.test/pause:1"

// buildPauseImage builds the pause program (static, no cgo) and packs it
// into an OCI image layout tarball at dir/pause.tar, which `ctr images
// import` reads; it returns the tarball's path.
func buildPauseImage(dir string) (string, error) {
	bin := filepath.Join(dir, "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./test/e2e/cri/pause")
	cmd.Dir = harness.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build pause: %w\n%s", err, out)
	}
	prog, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	layer, err := tarOf(tarEntry{name: "pause", mode: 0o755, data: prog})
	if err != nil {
		return "", err
	}
	archive, err := ociLayout(layer)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "pause.tar")
	return out, os.WriteFile(out, archive, 0o644)
}

type tarEntry struct {
	name string
	mode int64
	data []byte
}

// tarOf writes regular files into an uncompressed tar.
func tarOf(entries ...tarEntry) ([]byte, error) {
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if err := w.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := w.Write(e.data); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), w.Close()
}

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Platform    map[string]string `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ociLayout is an OCI image layout (oci-layout, index.json, blobs) with
// one image: the layer, a config that runs /pause, and a manifest. The
// index names the image the way containerd's importer reads a name.
func ociLayout(layer []byte) ([]byte, error) {
	platform := map[string]string{"architecture": runtime.GOARCH, "os": "linux"}
	config, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/pause"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{digestOf(layer)}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digestOf(config), Size: len(config)},
		"layers":        []descriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: digestOf(layer), Size: len(layer)}},
	})
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests": []descriptor{{
			MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: digestOf(manifest), Size: len(manifest),
			Platform:    platform,
			Annotations: map[string]string{"io.containerd.image.name": pauseImage, "org.opencontainers.image.ref.name": "1"},
		}},
	})
	entries := []tarEntry{
		{name: "oci-layout", mode: 0o644, data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{name: "index.json", mode: 0o644, data: index},
	}
	for _, blob := range [][]byte{layer, config, manifest} {
		entries = append(entries, tarEntry{name: "blobs/sha256/" + digestOf(blob)[len("sha256:"):], mode: 0o644, data: blob})
	}
	return tarOf(entries...)
}
