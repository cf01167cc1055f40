package config

import (
	"encoding/json"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

func base() map[string]any {
	return map[string]any{
		"cniVersion": "1.1.0", "name": "vmnet", "type": "tapbridge-cni", "bridge": "br-ext",
		"hostAddress": map[string]any{"static": map[string]any{"node-a": []string{"172.16.13.150/24"}}, "pool": []string{"172.16.13.240/28"}},
		"ipam":        map[string]any{"type": "host-local"},
	}
}

func parse(t *testing.T, mod func(map[string]any), env Env) (*Net, error) {
	t.Helper()
	c := base()
	if mod != nil {
		mod(c)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if env.Hostname == "" {
		env.Hostname = "node-a"
	}
	return Parse(b, env)
}

func TestDefaults(t *testing.T) {
	n, err := parse(t, nil, Env{})
	if err != nil {
		t.Fatal(err)
	}
	if n.DataDir != DefaultDataDir || n.Tap.Owner != -1 || n.Tap.Group != -1 || !n.SpoofCheck ||
		n.LockTimeout != DefaultLockTimeout || n.Host.Node != "node-a" || len(n.Host.Static) != 1 || n.MAC != nil || n.GC != nil {
		t.Errorf("defaults: %+v", n)
	}
}

func TestLogLevels(t *testing.T) {
	for name, want := range map[string]slog.Level{"": slog.LevelWarn, "debug": slog.LevelDebug,
		"INFO": slog.LevelInfo, "Warn": slog.LevelWarn, "error": slog.LevelError} {
		n, err := parse(t, func(c map[string]any) { c["logLevel"] = name }, Env{})
		if err != nil || n.LogLevel != want {
			t.Errorf("logLevel %q: got %v, %v; want %v", name, n, err, want)
		}
	}
}

// Every invalid field gets its kind (→ CNI code) and a message naming it.
func TestInvalidFields(t *testing.T) {
	set := func(k string, v any) func(map[string]any) { return func(c map[string]any) { c[k] = v } }
	host := func(k string, v any) func(map[string]any) {
		return func(c map[string]any) { c["hostAddress"].(map[string]any)[k] = v }
	}
	cases := []struct {
		name  string
		mod   func(map[string]any)
		env   Env
		kind  error
		field string
	}{
		{"no bridge", set("bridge", ""), Env{}, ErrInvalid, "bridge"},
		{"long bridge", set("bridge", "a-very-long-bridge"), Env{}, ErrInvalid, "bridge"},
		{"bridge with slash", set("bridge", "br/0"), Env{}, ErrInvalid, "bridge"},
		{"mtu too small", set("mtu", 67), Env{}, ErrInvalid, "mtu"},
		{"mtu too big", set("mtu", 65536), Env{}, ErrInvalid, "mtu"},
		{"mtu not a number", set("mtu", "1500"), Env{}, ErrDecode, "config"},
		{"bad mac", set("mac", "zz:zz"), Env{}, ErrInvalid, "mac"},
		{"multicast mac", set("mac", "01:00:5e:00:00:01"), Env{}, ErrInvalid, "mac"},
		{"zero mac", set("mac", "00:00:00:00:00:00"), Env{}, ErrInvalid, "mac"},
		{"runtime mac", set("runtimeConfig", map[string]any{"mac": "nope"}), Env{}, ErrInvalid, "runtimeConfig.mac"},
		{"CNI_ARGS mac", nil, Env{Args: "MAC=nope"}, ErrArgs, "CNI_ARGS MAC"},
		{"CNI_ARGS unknown key", nil, Env{Args: "FOO=bar"}, ErrArgs, "CNI_ARGS"},
		{"CNI_ARGS bad IP", nil, Env{Args: "IP=1.2.3"}, ErrArgs, "CNI_ARGS IP"},
		{"runtime ips", set("runtimeConfig", map[string]any{"ips": []string{"10.0.0.300/24"}}), Env{}, ErrInvalid, "runtimeConfig.ips"},
		{"args ips", set("args", map[string]any{"cni": map[string]any{"ips": []string{"x"}}}), Env{}, ErrInvalid, "args.cni.ips"},
		{"negative owner", set("tap", map[string]any{"owner": -1}), Env{}, ErrInvalid, "tap.owner"},
		{"huge group", set("tap", map[string]any{"group": 1 << 33}), Env{}, ErrInvalid, "tap.group"},
		{"static not CIDR", host("static", map[string]any{"node-b": []string{"172.16.13.150"}}), Env{}, ErrInvalid, "hostAddress.static[node-b]"},
		{"static network address", host("static", map[string]any{"node-a": []string{"172.16.13.0/24"}}), Env{}, ErrInvalid, "hostAddress.static[node-a]"},
		{"pool not CIDR", host("pool", []string{"nope"}), Env{}, ErrInvalid, "hostAddress.pool"},
		{"bad probeWait", host("probeWait", "soon"), Env{}, ErrInvalid, "hostAddress.probeWait"},
		{"probeWait beyond half of lockTimeout", host("probeWait", "5s"), Env{}, ErrInvalid, "hostAddress.probeWait"},
		{"relative dataDir", set("dataDir", "state"), Env{}, ErrInvalid, "dataDir"},
		{"relative logFile", set("logFile", "x.log"), Env{}, ErrInvalid, "logFile"},
		{"bad logLevel", set("logLevel", "loud"), Env{}, ErrInvalid, "logLevel"},
		{"logLevel offset", set("logLevel", "warn+2"), Env{}, ErrInvalid, "logLevel"},
		{"bad lockTimeout", set("lockTimeout", "-1s"), Env{}, ErrInvalid, "lockTimeout"},
		{"bad ipamTimeout", set("ipamTimeout", "2h"), Env{}, ErrInvalid, "ipamTimeout"},
		{"GC list not a list", set("cni.dev/valid-attachments", "all"), Env{}, ErrDecode, "cni.dev/valid-attachments"},
		{"GC entry without ifname", set("cni.dev/valid-attachments", []any{map[string]any{"containerID": "x"}}), Env{}, ErrInvalid, "cni.dev/valid-attachments"},
		{"dhcp without ipam", func(c map[string]any) {
			delete(c, "ipam")
			c["dhcp"] = map[string]any{"enabled": true}
		}, Env{}, ErrInvalid, "dhcp.enabled"},
		{"dhcp lease too short", set("dhcp", map[string]any{"enabled": true, "leaseTime": "30s"}), Env{}, ErrInvalid, "dhcp.leaseTime"},
		{"dhcp lease not whole seconds", set("dhcp", map[string]any{"enabled": true, "leaseTime": "90.5s"}), Env{}, ErrInvalid, "dhcp.leaseTime"},
		{"dhcp lease bad while off", set("dhcp", map[string]any{"leaseTime": "forever"}), Env{}, ErrInvalid, "dhcp.leaseTime"},
		{"dhcp not an object", set("dhcp", true), Env{}, ErrDecode, "config"},
		{"learnLinkLocal without spoofCheck", func(c map[string]any) {
			c["learnLinkLocal"], c["spoofCheck"] = true, false
		}, Env{}, ErrInvalid, "learnLinkLocal"},
		{"learnLinkLocal without ipam", func(c map[string]any) {
			delete(c, "ipam")
			c["learnLinkLocal"] = true
		}, Env{}, ErrInvalid, "learnLinkLocal"},
		{"learnLinkLocal not a bool", set("learnLinkLocal", "yes"), Env{}, ErrDecode, "config"},
		{"allowPersistentIPs not a boolean", set("allowPersistentIPs", "yes"), Env{}, ErrInvalid, "allowPersistentIPs"},
		{"allowPersistentIPs without ipam", func(c map[string]any) {
			delete(c, "ipam")
			c["allowPersistentIPs"] = true
		}, Env{}, ErrInvalid, "allowPersistentIPs"},
		{"bad prevResult", set("prevResult", map[string]any{"cniVersion": "1.1.0", "ips": "x"}), Env{}, ErrDecode, "prevResult"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parse(t, c.mod, c.env)
			var fe *FieldError
			if !errors.Is(err, c.kind) || !errors.As(err, &fe) || fe.Field != c.field || fe.Msg == "" {
				t.Fatalf("err = %v (%#v), want kind %v on field %q", err, fe, c.kind, c.field)
			}
		})
	}
}

// allowPersistentIPs is the kubevirt-ipam-controller's; the plugin only
// checks it and keeps what it said.
func TestAllowPersistentIPs(t *testing.T) {
	for _, v := range []bool{true, false} {
		n, err := parse(t, func(c map[string]any) { c["allowPersistentIPs"] = v }, Env{})
		if err != nil || n.PersistentIPs != v {
			t.Fatalf("allowPersistentIPs %v: %v, %+v", v, err, n)
		}
	}
}

func TestDHCP(t *testing.T) {
	cases := map[string]struct {
		dhcp any
		want *DHCP
	}{
		"absent":            {nil, nil},
		"off":               {map[string]any{"enabled": false, "leaseTime": "2h"}, nil},
		"on, default lease": {map[string]any{"enabled": true}, &DHCP{LeaseTime: DefaultLeaseTime}},
		"on, lease":         {map[string]any{"enabled": true, "leaseTime": "10m"}, &DHCP{LeaseTime: 10 * time.Minute}},
	}
	for name, c := range cases {
		n, err := parse(t, func(m map[string]any) {
			if c.dhcp != nil {
				m["dhcp"] = c.dhcp
			}
		}, Env{})
		if err != nil || !reflect.DeepEqual(n.DHCP, c.want) {
			t.Errorf("%s: DHCP = %+v (%v), want %+v", name, n.DHCP, err, c.want)
		}
	}
}

// learnLinkLocal is off unless asked for, and needs nothing else.
func TestLearnLinkLocal(t *testing.T) {
	for _, c := range []struct {
		set  any
		want bool
	}{{nil, false}, {false, false}, {true, true}} {
		n, err := parse(t, func(m map[string]any) {
			if c.set != nil {
				m["learnLinkLocal"] = c.set
			}
		}, Env{})
		if err != nil || n.LearnLinkLocal != c.want {
			t.Errorf("learnLinkLocal %v: got %v (%v), want %v", c.set, n.LearnLinkLocal, err, c.want)
		}
	}
}

func TestNodeNameNeeded(t *testing.T) {
	_, err := Parse([]byte(`{"name":"n","cniVersion":"1.1.0","bridge":"br0"}`), Env{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "hostAddress.nodeName") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Parse([]byte(`{"name":"n","cniVersion":"1.1.0","bridge":"br0","hostAddress":{"disabled":true}}`), Env{}); err != nil {
		t.Fatalf("disabled host addresses need no node name: %v", err)
	}
}

func TestOversized(t *testing.T) {
	_, err := Parse(make([]byte, MaxConfigBytes+1), Env{})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
}

// The conventions' precedence: runtimeConfig > args.cni > CNI_ARGS > config.
func TestMACPrecedence(t *testing.T) {
	all := func(c map[string]any) {
		c["mac"] = "0a:00:00:00:00:04"
		c["args"] = map[string]any{"cni": map[string]any{"mac": "0a:00:00:00:00:02"}}
		c["runtimeConfig"] = map[string]any{"mac": "0a:00:00:00:00:01"}
	}
	env := Env{Args: "IgnoreUnknown=1;MAC=0a:00:00:00:00:03;K8S_POD_NAME=x"}
	steps := []struct {
		drop string
		want string
	}{{"", "0a:00:00:00:00:01"}, {"runtimeConfig", "0a:00:00:00:00:02"}, {"args", "0a:00:00:00:00:03"}, {"CNI_ARGS", "0a:00:00:00:00:04"}}
	dropped := map[string]bool{}
	for _, s := range steps {
		dropped[s.drop] = true
		e := env
		if dropped["CNI_ARGS"] {
			e.Args = ""
		}
		n, err := parse(t, func(c map[string]any) {
			all(c)
			for k := range dropped {
				delete(c, k)
			}
		}, e)
		if err != nil || n.MAC.String() != s.want {
			t.Fatalf("after dropping %q: mac %v err %v, want %s", s.drop, n, err, s.want)
		}
	}
}

func TestKubernetesArgsWithoutIgnoreUnknown(t *testing.T) {
	args := "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=vm;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u"
	n, err := parse(t, nil, Env{Args: args})
	if err != nil {
		t.Fatalf("kubelet's CNI_ARGS refused: %v", err)
	}
	if n.Pod != (Pod{Namespace: "ns", Name: "vm"}) {
		t.Fatalf("pod %+v, want ns/vm", n.Pod)
	}
}

func TestGCList(t *testing.T) {
	n, err := parse(t, func(c map[string]any) {
		c["cni.dev/valid-attachments"] = []any{map[string]any{"containerID": "a", "ifname": "eth0"}}
	}, Env{})
	if err != nil || n.GC == nil || len(n.GC.Valid) != 1 {
		t.Fatalf("GC list: %+v %v", n, err)
	}
	// libcni sends null for GCArgs with a nil list: nothing is valid, as
	// libcni itself treats it.
	n, err = parse(t, func(c map[string]any) { c["cni.dev/valid-attachments"] = nil }, Env{})
	if err != nil || n.GC == nil || len(n.GC.Valid) != 0 {
		t.Fatalf("null list: %+v %v", n.GC, err)
	}
	n, err = parse(t, nil, Env{})
	if err != nil || n.GC != nil {
		t.Fatalf("no key: %+v %v", n.GC, err)
	}
}

// A pool probe must fit in half of lockTimeout; without a pool nothing is
// probed and probeWait is not bounded.
func TestProbeWaitBound(t *testing.T) {
	probe := func(wait, lock string, pool bool) func(map[string]any) {
		return func(c map[string]any) {
			h := c["hostAddress"].(map[string]any)
			h["probeWait"] = wait
			if !pool {
				delete(h, "pool")
			}
			c["lockTimeout"] = lock
		}
	}
	if _, err := parse(t, probe("4900ms", "10s", true), Env{}); err != nil {
		t.Errorf("probeWait under half of lockTimeout: %v", err)
	}
	_, err := parse(t, probe("30s", "1m", true), Env{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "lockTimeout (1m0s)") {
		t.Errorf("probeWait of half of lockTimeout: got %v, want ErrInvalid naming both", err)
	}
	if _, err := parse(t, probe("1h", "10s", false), Env{}); err != nil {
		t.Errorf("probeWait without a pool: %v", err)
	}
}

// ipamExec is off unless set: host-local and static then run in process.
func TestIPAMExec(t *testing.T) {
	for _, set := range []bool{false, true} {
		n, err := parse(t, func(c map[string]any) {
			if set {
				c["ipamExec"] = true
			}
		}, Env{})
		if err != nil || n.IPAMExec != set {
			t.Errorf("ipamExec set %v: IPAMExec %v, err %v", set, n != nil && n.IPAMExec, err)
		}
	}
	if _, err := parse(t, func(c map[string]any) { c["ipamExec"] = "yes" }, Env{}); !errors.Is(err, ErrDecode) {
		t.Errorf("ipamExec \"yes\": %v, want a decode error", err)
	}
}

// DEL parses leniently: a field only ADD uses may be wrong (ADD then
// created nothing, or an older tapbridge took it), and DEL must still
// run; the fields DEL needs must be valid.
func TestParseForDel(t *testing.T) {
	badPool := func(c map[string]any) { c["hostAddress"].(map[string]any)["pool"] = []string{"nope"} }
	if _, err := parse(t, badPool, Env{}); err == nil {
		t.Fatal("ADD's parse took a bad pool")
	}
	n, err := parse(t, badPool, Env{ForDel: true})
	if err != nil || len(n.Ignored) != 1 || !strings.Contains(n.Ignored[0].Error(), "hostAddress.pool") {
		t.Fatalf("DEL's parse: %v, ignored %v; want the pool's error ignored", err, n)
	}
	if n.Bridge != "br-ext" || n.DataDir != DefaultDataDir || n.LockTimeout != DefaultLockTimeout || n.IPAMType != "host-local" {
		t.Errorf("DEL's parse lost what DEL needs: %+v", n)
	}
	// Fields DEL does not use may even have the wrong type, and a
	// relative logFile is not opened.
	for name, mod := range map[string]func(map[string]any){
		"mtu not a number":     func(c map[string]any) { c["mtu"] = "x" },
		"mtu out of range":     func(c map[string]any) { c["mtu"] = 7 },
		"dhcp not an object":   func(c map[string]any) { c["dhcp"] = true },
		"relative logFile":     func(c map[string]any) { c["logFile"] = "tapbridge.log" },
		"learnLinkLocal a str": func(c map[string]any) { c["learnLinkLocal"] = "yes" },
	} {
		n, err := parse(t, mod, Env{ForDel: true})
		if err != nil || n.Bridge != "br-ext" || n.IPAMType != "host-local" || n.LogFile != "" {
			t.Errorf("DEL's parse with %s: %v %+v", name, err, n)
		}
	}
	for name, mod := range map[string]func(map[string]any){
		"no bridge":           func(c map[string]any) { c["bridge"] = "" },
		"relative dataDir":    func(c map[string]any) { c["dataDir"] = "state" },
		"bad lockTimeout":     func(c map[string]any) { c["lockTimeout"] = "soon" },
		"bridge not a string": func(c map[string]any) { c["bridge"] = 7 },
	} {
		if _, err := parse(t, mod, Env{ForDel: true}); err == nil {
			t.Errorf("DEL's parse took %s", name)
		}
	}
}
