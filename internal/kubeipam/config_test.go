package kubeipam

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func conf(ipam string) []byte {
	return []byte(`{"cniVersion":"1.1.0","name":"vmnet13","ipam":` + ipam + `}`)
}

func TestParse(t *testing.T) {
	c, err := Parse(conf(`{"type":"tapbridge-ipam","ranges":[[{"subnet":"172.16.13.0/24","rangeStart":"172.16.13.10","rangeEnd":"172.16.13.200","gateway":"172.16.13.1","exclude":["172.16.13.100","172.16.13.120/30"]}],[{"subnet":"2001:db8:13::/64"}]]}`),
		Env{ContainerID: "c", IfName: "net1", Hostname: "node-a", Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=vms;K8S_POD_NAME=p;K8S_POD_UID=u;MAC=02:00:00:00:00:01"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Node != "node-a" || c.Timeout != DefaultTimeout || c.Kubeconfig != DefaultKubeconfig || len(c.Sets) != 2 || len(c.Sets[0][0].Exclude) != 2 {
		t.Fatalf("%+v", c)
	}
	if a := c.Attachment; a.PodNamespace != "vms" || a.PodName != "p" || a.PodUID != "u" {
		t.Fatalf("attachment %+v", a)
	}
	c, err = Parse(conf(`{"ranges":[[{"subnet":"10.0.0.0/24"}]],"timeout":"3s","nodeName":"n1","kubeconfig":"/k"}`), Env{})
	if err != nil || c.Timeout != 3*time.Second || c.Node != "n1" || c.Kubeconfig != "/k" {
		t.Fatalf("%v %+v", err, c)
	}
}

// Every bad input has its kind (→ CNI code) and a message naming it.
func TestParseErrors(t *testing.T) {
	env := Env{Hostname: "node-a"}
	for _, c := range []struct {
		stdin []byte
		env   Env
		kind  error
		says  string
	}{
		{[]byte(`{`), env, ErrDecode, "decode"},
		{[]byte(`{"name":"n","ipam":{"ranges":"x"}}`), env, ErrDecode, "decode"},
		{conf(`{"ranges":[]}`), env, ErrInvalid, "ipam.ranges"},
		{conf(`{"ranges":[[]]}`), env, ErrInvalid, "ipam.ranges[0]"},
		{conf(`{"ranges":[[{"subnet":"10.0.0.0/33"}]]}`), env, ErrInvalid, "ipam.ranges[0][0]"},
		{conf(`{"ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.1.1"}]]}`), env, ErrInvalid, "rangeStart"},
		{conf(`{"ranges":[[{"subnet":"10.0.0.0/24","gateway":"x"}]]}`), env, ErrInvalid, "gateway"},
		{conf(`{"ranges":[[{"subnet":"10.0.0.0/24","exclude":["nope"]}]]}`), env, ErrInvalid, "exclude"},
		{conf(`{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"2001:db8::/64"}]]}`), env, ErrInvalid, "mixes"},
		{conf(`{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.0.0/25"}]]}`), env, ErrInvalid, "overlaps"},
		{conf(`{"ranges":[[{"subnet":"10.0.0.0/24"}]],"timeout":"1ms"}`), env, ErrInvalid, "ipam.timeout"},
		{conf(`{"ranges":[[{"subnet":"10.0.0.0/24"}]]}`), Env{}, ErrInvalid, "ipam.nodeName"},
		{[]byte(`{"ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}]]}}`), env, ErrInvalid, "no name"},
		{conf(`{"ranges":[[{"subnet":"10.0.0.0/24"}]]}`), Env{Hostname: "h", Args: "K8S_POD_NAME"}, ErrArgs, "KEY=VALUE"},
		{conf(`{"ranges":[[{"subnet":"10.0.0.0/24"}]]}`), Env{Hostname: "h", Args: "K8S_POD_NAME=p"}, ErrArgs, "K8S_POD_NAMESPACE"},
	} {
		_, err := Parse(c.stdin, c.env)
		if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s %+v: %v, want %v naming %q", c.stdin, c.env, err, c.kind, c.says)
		}
	}
}
