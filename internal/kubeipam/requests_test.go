package kubeipam

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// withRequests is a dual-stack network's config with extra top-level keys
// (runtimeConfig, args).
func withRequests(extra string) []byte {
	return []byte(`{"cniVersion":"1.1.0","name":"vmnet13",` + extra + `"ipam":{"ranges":[[{"subnet":"172.16.13.0/24","rangeStart":"172.16.13.10","rangeEnd":"172.16.13.200","gateway":"172.16.13.1","exclude":["172.16.13.100"]}],[{"subnet":"2001:db8:13::/64"}]]}}`)
}

// Host-local's precedence (CNI_ARGS IP=, then args.cni.ips, then
// runtimeConfig.ips), its syntax (a prefix length is ignored), a repeat
// counted once, each request in its set.
func TestRequests(t *testing.T) {
	env := Env{ContainerID: "c", IfName: "net1", Hostname: "h"}
	for _, c := range []struct {
		extra, args string
		want        string
	}{
		{``, "", "[invalid IP invalid IP]"},
		{`"runtimeConfig":{"ips":["172.16.13.50/24"]},`, "", "[172.16.13.50 invalid IP]"},
		{`"runtimeConfig":{"ips":["2001:db8:13::5/64","172.16.13.50"]},`, "", "[172.16.13.50 2001:db8:13::5]"},
		{`"args":{"cni":{"ips":["172.16.13.51"]}},"runtimeConfig":{"ips":["2001:db8:13::5"]},`, "", "[172.16.13.51 2001:db8:13::5]"},
		{`"runtimeConfig":{"ips":["172.16.13.52"]},`, "IgnoreUnknown=1;IP=172.16.13.52", "[172.16.13.52 invalid IP]"},
		{``, "IP=172.16.13.53/24", "[172.16.13.53 invalid IP]"},
	} {
		env.Args = c.args
		conf, err := Parse(withRequests(c.extra), env)
		if err != nil {
			t.Fatalf("%s %s: %v", c.extra, c.args, err)
		}
		got, err := conf.Requests()
		if err != nil {
			t.Fatalf("%s %s: %v", c.extra, c.args, err)
		}
		if fmt.Sprint(got) != c.want {
			t.Errorf("%s %s: want %v, expected %s", c.extra, c.args, got, c.want)
		}
	}
}

// TestRequestErrors: a request is refused by Requests (ADD), never by
// Parse: DEL and CHECK get the same stdin and CNI_ARGS as a refused ADD,
// and DEL must succeed.
func TestRequestErrors(t *testing.T) {
	env := Env{ContainerID: "c", IfName: "net1", Hostname: "h"}
	for _, c := range []struct {
		extra, args string
		kind        error
		says        []string
	}{
		{`"runtimeConfig":{"ips":["10.9.9.9"]},`, "", ErrRequest, []string{"10.9.9.9", "runtimeConfig.ips[0]", "no range"}},
		{`"runtimeConfig":{"ips":["172.16.13.1"]},`, "", ErrRequest, []string{"172.16.13.1", "gateway"}},
		{`"runtimeConfig":{"ips":["172.16.13.100"]},`, "", ErrRequest, []string{"172.16.13.100", "excludes"}},
		{`"runtimeConfig":{"ips":["172.16.13.250"]},`, "", ErrRequest, []string{"172.16.13.250", "outside"}},
		{`"args":{"cni":{"ips":["172.16.13.50"]}},"runtimeConfig":{"ips":["172.16.13.60"]},`, "", ErrRequest,
			[]string{"172.16.13.50 (args.cni.ips[0])", "172.16.13.60 (runtimeConfig.ips[0])", "range set 0", "one address per set"}},
		{`"runtimeConfig":{"ips":["172.16.13.60"]},`, "IP=172.16.13.61", ErrRequest, []string{"CNI_ARGS IP", "172.16.13.61", "172.16.13.60"}},
		{`"runtimeConfig":{"ips":["nope"]},`, "", ErrInvalid, []string{"runtimeConfig.ips[0]", "nope"}},
		{`"args":{"cni":{"ips":["10.0.0.300"]}},`, "", ErrInvalid, []string{"args.cni.ips[0]"}},
		{``, "IP=nope", ErrArgs, []string{"CNI_ARGS IP", "nope"}},
	} {
		env.Args = c.args
		conf, err := Parse(withRequests(c.extra), env)
		if err != nil {
			t.Errorf("%s %s: Parse: %v (a request is ADD's to check)", c.extra, c.args, err)
			continue
		}
		_, err = conf.Requests()
		if !errors.Is(err, c.kind) {
			t.Errorf("%s %s: %v, want %v", c.extra, c.args, err, c.kind)
			continue
		}
		for _, s := range c.says {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s %s: %q does not name %q", c.extra, c.args, err, s)
			}
		}
	}
}
