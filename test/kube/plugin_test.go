package kube_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// TestThroughPlugin: tapbridge-cni delegates to tapbridge-ipam as a
// runtime's conflist makes it (same stdin, CNI_ARGS passed on): a VM's
// pod on node A and its migration target on node B, one IPAMClaim, get
// the same address on their TAP attachments; both DELs leave the nodes
// clean and the address with the claim.
func TestThroughPlugin(t *testing.T) {
	nw := newNet(t, `[[{"subnet":"10.105.0.0/24","rangeStart":"10.105.0.10","rangeEnd":"10.105.0.20","gateway":"10.105.0.1"}]]`)
	makeClaim(t, "vm7.flat", nw.name, "pod7a7a7a7a")
	ann := claimNetworks(nw, "pod7a7a7a7a", "vm7.flat")
	var addrs []string
	for i, name := range []string{"node-a", "node-b"} {
		hn, err := harness.NewNode(fmt.Sprintf("%s-h%d", runID, i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := hn.Close(); err != nil {
				t.Error(err)
			}
		})
		if _, err := cluster.JoinNode(hn.Host, 100+i); err != nil {
			t.Fatal(err)
		}
		podNS := harness.Netns{Name: hn.ID + "-pod"}
		t.Cleanup(func() { _ = podNS.Delete() })
		if _, err := harness.NewNetns(podNS.Name); err != nil {
			t.Fatal(err)
		}
		pod := makePod(t, fmt.Sprintf("virt-launcher-vm7-%d", i), ann)
		stdin := fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":%q,"type":"tapbridge-cni","bridge":%q,"dataDir":%q,
			"hostAddress":{"disabled":true},"allowPersistentIPs":true,
			"ipam":{"type":"tapbridge-ipam","kubeconfig":%q,"nodeName":%q,"timeout":"10s","ranges":%s}}`,
			nw.name, harness.BridgeName, filepath.Join(t.TempDir(), "state"), saConfig, name, nw.ranges)
		a := attachment{cid: fmt.Sprintf("vm7-%d", i), ifname: "pod7a7a7a7a", pod: pod}
		call := harness.Call{Binary: cniBin, ContainerID: a.cid, Netns: podNS.Path(), IfName: a.ifname, Args: a.args(),
			Path: filepath.Dir(ipamBin), Stdin: stdin}
		run := func(cmd string) harness.Outcome {
			c := call
			c.Command = cmd
			var out harness.Outcome
			if err := hn.Host.Do(func() error { var err error; out, err = c.Run(); return err }); err != nil {
				t.Fatalf("%s on %s: %v", cmd, name, err)
			}
			if out.RC != 0 {
				t.Fatalf("%s on %s: rc %d %s %s", cmd, name, out.RC, out.Stdout, out.Stderr)
			}
			return out
		}
		got := resultAddrs(t, run("ADD").Stdout)
		addrs = append(addrs, fmt.Sprint(got))
		t.Cleanup(func() { run("DEL") })
	}
	if addrs[0] != addrs[1] {
		t.Fatalf("source got %s, migration target %s", addrs[0], addrs[1])
	}
	if ips := claimIPs(t, "vm7.flat"); len(ips) != 1 {
		t.Fatalf("claim status.ips %v", ips)
	}
	t.Logf("source and target of vm7 both have %s through tapbridge-cni", addrs[0])
}
