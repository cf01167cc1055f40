package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// fuzzSeeds are valid configurations for every mode and version: L2
// only, host-local, static IPAM, host addresses static, from a pool and
// disabled, a requested MAC, capabilities, a prevResult and a GC list.
func fuzzSeeds() []string {
	var out []string
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		head := fmt.Sprintf(`{"cniVersion":%q,"name":"vmnet","type":"tapbridge-cni","bridge":"br-ext"`, v)
		for _, body := range []string{
			`}`,
			`,"hostAddress":{"disabled":true}}`,
			`,"mtu":9000,"mac":"52:54:00:12:34:56","tap":{"owner":107,"group":107,"multiQueue":true},` +
				`"hostAddress":{"nodeName":"node-a","static":{"node-a":["172.16.13.150/24","fd00:13::150/64"]}},` +
				`"ipam":{"type":"host-local","ranges":[[{"subnet":"172.16.13.0/24"}],[{"subnet":"fd00:13::/64"}]]}}`,
			`,"hostAddress":{"pool":["172.16.3.0/24","172.16.13.128/25"],"probeWait":"50ms"},"spoofCheck":false,"portIsolation":true,` +
				`"dataDir":"/run/tapbridge","logFile":"/var/log/tapbridge.log","logLevel":"debug","lockTimeout":"3s","ipamTimeout":"20s",` +
				`"ipam":{"type":"static","addresses":[{"address":"172.16.3.7/24"}]}}`,
			`,"runtimeConfig":{"mac":"02:00:00:00:00:01","ips":["172.16.13.7/24"]},"args":{"cni":{"mac":"02:00:00:00:00:02","ips":["172.16.13.8"]}}}`,
			`,"prevResult":{"cniVersion":"` + v + `","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.0.0.2/24","interface":0}]}}`,
			`,"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"net1"}],"cni.dev/attachments":[]}`,
		} {
			out = append(out, head+body)
		}
	}
	return out
}

// FuzzParse: whatever the bytes and CNI_ARGS, Parse returns a validated
// Net or an error of one of its three kinds, never panics, and an
// accepted Net satisfies every invariant the plugin relies on.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s), "")
		f.Add([]byte(s), "IgnoreUnknown=1;K8S_POD_NAME=vm;MAC=52:54:00:00:00:07;IP=172.16.13.9")
	}
	f.Add([]byte(`{"bridge":"br0","mtu":-1}`), "FOO=bar")
	f.Fuzz(func(t *testing.T, stdin []byte, args string) {
		n, err := Parse(stdin, Env{ContainerID: "cid", IfName: "net1", Args: args, Hostname: "node-a"})
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrDecode) && !errors.Is(err, ErrArgs) {
				t.Fatalf("error of no known kind (no CNI code for it): %v", err)
			}
			if n != nil {
				t.Fatal("both a Net and an error")
			}
			return
		}
		if err := checkNet(n, stdin); err != nil {
			t.Fatalf("accepted %q: %v", stdin, err)
		}
	})
}

// checkNet is what the rest of the plugin assumes of a parsed Net.
func checkNet(n *Net, stdin []byte) error {
	switch {
	case string(n.Bytes) != string(stdin):
		return errors.New("Bytes is not stdin: IPAM must get the very same document")
	case len(stdin) > MaxConfigBytes:
		return fmt.Errorf("%d bytes accepted, over the %d cap", len(stdin), MaxConfigBytes)
	case n.MTU != 0 && (n.MTU < 68 || n.MTU > 65535):
		return fmt.Errorf("mtu %d", n.MTU)
	case n.Bridge == "" || len(n.Bridge) > 15 || n.Bridge == "." || n.Bridge == ".." || strings.ContainsAny(n.Bridge, "/: \t\n"):
		return fmt.Errorf("bridge name %q", n.Bridge)
	case !strings.HasPrefix(n.DataDir, "/"):
		return fmt.Errorf("dataDir %q is not absolute", n.DataDir)
	case n.LogFile != "" && !strings.HasPrefix(n.LogFile, "/"):
		return fmt.Errorf("logFile %q is not absolute", n.LogFile)
	case n.LockTimeout <= 0 || n.IPAMTimeout <= 0 || n.Host.ProbeWait <= 0:
		return fmt.Errorf("timeouts %s %s %s", n.LockTimeout, n.IPAMTimeout, n.Host.ProbeWait)
	case n.Tap.Owner < -1 || n.Tap.Owner >= 1<<32-1 || n.Tap.Group < -1 || n.Tap.Group >= 1<<32-1:
		return fmt.Errorf("tap owner %d group %d", n.Tap.Owner, n.Tap.Group)
	case n.MAC != nil && (len(n.MAC) != 6 || n.MAC[0]&1 != 0 || string(n.MAC) == string(make([]byte, 6))):
		return fmt.Errorf("guest MAC %s", n.MAC)
	case !n.Host.Disabled && n.Host.Node == "":
		return errors.New("host addresses on, but no node name")
	}
	for _, p := range append(append([]netip.Prefix{}, n.Host.Static...), n.Host.Pool...) {
		if !p.IsValid() || p.Addr().IsMulticast() || p.Addr().IsUnspecified() || p.Addr().IsLoopback() {
			return fmt.Errorf("host address or pool %s", p)
		}
	}
	for _, p := range n.Host.Pool {
		if p != p.Masked() {
			return fmt.Errorf("pool range %s is not masked", p)
		}
	}
	if n.GC != nil {
		for a := range n.GC.Valid {
			if a.ContainerID == "" || a.IfName == "" {
				return fmt.Errorf("GC entry %+v", a)
			}
		}
	}
	return nil
}
