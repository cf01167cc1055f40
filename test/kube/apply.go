package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// Upstream CRDs the IPAM works with, at the versions the issue pins; the
// module proxy serves both, and the YAML is in each module's zip.
var upstreamCRDs = []struct{ Module, Version, File string }{
	{"github.com/k8snetworkplumbingwg/network-attachment-definition-client", "v1.7.6", "artifacts/networks-crd.yaml"},
	{"github.com/k8snetworkplumbingwg/ipamclaims", "v0.4.0-alpha", "artifacts/k8s.cni.cncf.io_ipamclaims.yaml"},
}

// notServed are the API groups of conf/ manifests whose CRDs belong to
// operators this tier does not run; every other document must apply.
var notServed = map[string]string{
	"kubevirt.io": "KubeVirt's CRDs come with its operator, not installed here",
	"nmstate.io":  "kubernetes-nmstate's CRDs come with its operator, not installed here",
}

// UpstreamCRDPaths downloads (or finds in the module cache) the CRD files.
func UpstreamCRDPaths() ([]string, error) {
	var out []string
	for _, m := range upstreamCRDs {
		cmd := exec.Command("go", "mod", "download", "-json", m.Module+"@"+m.Version)
		cmd.Dir = harness.RepoRoot()
		b, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("go mod download %s@%s: %w", m.Module, m.Version, err)
		}
		var info struct{ Dir, Error string }
		if err := json.Unmarshal(b, &info); err != nil || info.Dir == "" {
			return nil, fmt.Errorf("go mod download %s@%s: %v %s", m.Module, m.Version, err, info.Error)
		}
		out = append(out, filepath.Join(info.Dir, m.File))
	}
	return out, nil
}

// Kubectl runs kubectl as admin inside the API netns.
func (c *Cluster) Kubectl(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	var out bytes.Buffer
	err := c.Netns.Do(func() error {
		cmd := exec.CommandContext(ctx, Kubectl(), append([]string{"--kubeconfig", c.Admin}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		cmd.Stdout, cmd.Stderr = &out, &out
		return cmd.Run()
	})
	if err != nil {
		return out.Bytes(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out.Bytes())
	}
	return out.Bytes(), nil
}

// ApplyStrict applies YAML documents with server-side apply and strict
// field validation: an unknown or duplicate field fails, as it would for
// a user.
func (c *Cluster) ApplyStrict(ctx context.Context, docs []byte) error {
	_, err := c.Kubectl(ctx, docs, "apply", "--server-side", "--field-manager=tapbridge-test", "--validate=strict", "-f", "-")
	return err
}

// ApplyProject installs the upstream CRDs and every document of
// conf/k8s and conf/kubevirt this API server can hold (CRDs first, then
// waits for them to be served). It returns what it applied and what it
// left out, with the reason.
func (c *Cluster) ApplyProject(ctx context.Context) (applied, skipped []string, err error) {
	crds, err := UpstreamCRDPaths()
	if err != nil {
		return nil, nil, err
	}
	files, err := projectManifests()
	if err != nil {
		return nil, nil, err
	}
	var first, rest bytes.Buffer
	for _, f := range append(crds, files...) {
		docs, err := splitDocs(f)
		if err != nil {
			return nil, nil, err
		}
		for _, d := range docs {
			what := fmt.Sprintf("%s %s/%s (%s)", d.Kind, d.Namespace, d.Name, rel(f))
			if why, ok := notServed[d.group()]; ok {
				skipped = append(skipped, what+": "+why)
				continue
			}
			dst := &rest
			if d.Kind == "CustomResourceDefinition" {
				dst = &first
			}
			dst.WriteString("---\n")
			dst.Write(d.raw)
			applied = append(applied, what)
		}
	}
	if err := c.ApplyStrict(ctx, first.Bytes()); err != nil {
		return nil, nil, err
	}
	if _, err := c.Kubectl(ctx, nil, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"); err != nil {
		return nil, nil, err
	}
	return applied, skipped, c.ApplyStrict(ctx, rest.Bytes())
}

func rel(path string) string {
	if r, err := filepath.Rel(harness.RepoRoot(), path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return filepath.Base(path)
}

func projectManifests() ([]string, error) {
	var out []string
	for _, dir := range []string{"conf/k8s", "conf/kubevirt"} {
		for _, ext := range []string{"*.yaml", "*.yml"} {
			m, err := filepath.Glob(filepath.Join(harness.RepoRoot(), dir, ext))
			if err != nil {
				return nil, err
			}
			out = append(out, m...)
		}
	}
	sort.Strings(out)
	return out, nil
}

type manifest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Name, Namespace string
	raw             []byte
}

func (m manifest) group() string {
	g, _, ok := strings.Cut(m.APIVersion, "/")
	if !ok {
		return ""
	}
	return g
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

func splitDocs(path string) ([]manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []manifest
	for i, part := range docSep.Split(string(b), -1) {
		var m manifest
		if err := yaml.Unmarshal([]byte(part), &m); err != nil {
			return nil, fmt.Errorf("%s document %d: %w", path, i, err)
		}
		if m.Kind == "" {
			continue // comments only
		}
		m.Name, m.Namespace, m.raw = m.Metadata.Name, m.Metadata.Namespace, []byte(strings.TrimSpace(part)+"\n")
		out = append(out, m)
	}
	return out, nil
}
