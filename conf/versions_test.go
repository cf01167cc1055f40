package conf

import (
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/version"
)

// oldestCallerVersion is the highest version a libcni before v1.2 (the one
// containerd 1.6 vendors, as Debian 12 and most distributions ship it)
// runs; it refuses a conflist whose cniVersion is above it.
const oldestCallerVersion = "1.0.0"

// TestEveryCallerReadsTheConfigs: each conflist and NAD config gives a
// caller on libcni v1.2 or later (which reads cniVersions and takes the
// highest it knows) 1.1.0, so GC and STATUS reach the plugin, and gives an
// older caller (which reads only cniVersion) a version it runs.
func TestEveryCallerReadsTheConfigs(t *testing.T) {
	configs := map[string][]byte{}
	for _, n := range nodeNetworks(t) {
		configs[n.where] = mustRead(t, n.where)
	}
	for _, d := range yamlDocs(t) {
		if cfg := d.str("spec", "config"); d.kind() == "NetworkAttachmentDefinition" && cfg != "" {
			configs[d.where] = []byte(cfg)
		}
	}
	for where, b := range configs {
		list, err := libcni.ConfListFromBytes(b)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		if list.CNIVersion != "1.1.0" {
			t.Errorf("%s: libcni %s runs it at %s, want 1.1.0 (GC and STATUS need it)", where, version.Current(), list.CNIVersion)
		}
		old := splitConfig(t, where, b)[0]
		v, err := (&version.ConfigDecoder{}).Decode(old.plugin)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		newer, err := version.GreaterThan(v, oldestCallerVersion)
		if err != nil {
			t.Errorf("%s: cniVersion %q: %v", where, v, err)
			continue
		}
		if newer {
			t.Errorf("%s: cniVersion %s, which a caller on libcni before v1.2 (containerd 1.6) refuses; want at most %s", where, v, oldestCallerVersion)
		}
	}
}
