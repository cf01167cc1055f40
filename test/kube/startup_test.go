package kube_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// TestStartupCost measures what a client per exec costs: the process
// start and package init (VERSION) against tapbridge-cni's, which links
// no Kubernetes client, then STATUS (kubeconfig, TLS handshake, two
// discovery requests) and ADD/DEL one at a time. Figures are logged (the
// machine is shared: they are for the README, not asserted, except that
// every call succeeds).
func TestStartupCost(t *testing.T) {
	cni := cniBin
	nw := newNet(t, `[[{"subnet":"10.104.0.0/24"}]]`)
	n := newNode(t, "node-a")
	const runs = 30
	p50 := func(name string, fn func(i int) error) time.Duration {
		var d []time.Duration
		for i := range runs {
			t0 := time.Now()
			if err := fn(i); err != nil {
				t.Fatalf("%s %d: %v", name, i, err)
			}
			d = append(d, time.Since(t0))
		}
		slices.Sort(d)
		return d[len(d)/2]
	}
	version := func(bin string) func(int) error {
		return func(int) error {
			out := harness.Call{Binary: bin, Command: "VERSION", Path: "/nonexistent", Stdin: []byte(`{"cniVersion":"1.1.0"}`)}
			o, err := out.Run()
			if err == nil && o.RC != 0 {
				err = fmt.Errorf("rc %d", o.RC)
			}
			return err
		}
	}
	call := func(cmd string) func(int) error {
		return func(i int) error {
			o := n.call(nw, cmd, attachment{cid: fmt.Sprintf("s%d", i), ifname: "net1"}, nil)
			if o.RC != 0 {
				return fmt.Errorf("rc %d %s", o.RC, o.Stdout)
			}
			return nil
		}
	}
	vi, vc := p50("VERSION ipam", version(ipamBin)), p50("VERSION cni", version(cni))
	st := p50("STATUS", call("STATUS"))
	add := p50("ADD", call("ADD"))
	del := p50("DEL", call("DEL"))
	t.Logf("p50 of %d execs: VERSION tapbridge-ipam %s vs tapbridge-cni %s (client-go's init: +%s); STATUS %s; ADD %s; DEL %s",
		runs, ms(vi), ms(vc), ms(vi-vc), ms(st), ms(add), ms(del))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
