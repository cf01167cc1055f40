package kube_test

import (
	"strings"
	"testing"
)

// TestManifests: every document of conf/k8s and conf/kubevirt that this
// API server can hold was applied with strict server-side validation
// (TestMain fails otherwise); the rest are named with the reason. A
// document with an unknown field is refused, so the check has teeth.
func TestManifests(t *testing.T) {
	for _, want := range []string{
		"CustomResourceDefinition /ipallocations.tapbridge.io", "CustomResourceDefinition /ipamclaims.k8s.cni.cncf.io",
		"CustomResourceDefinition /network-attachment-definitions.k8s.cni.cncf.io",
		"DaemonSet kube-system/tapbridge-cni", "ClusterRole /tapbridge-ipam", "NetworkAttachmentDefinition default/vmnet13",
	} {
		found := false
		for _, a := range applied {
			found = found || strings.HasPrefix(a, want)
		}
		if !found {
			t.Errorf("%s was not applied; applied: %v", want, applied)
		}
	}
	for _, a := range applied {
		t.Logf("applied: %s", a)
	}
	for _, s := range skippedDoc {
		t.Logf("not applied: %s", s)
	}
	bad := []byte(`apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: strict-check, namespace: default}
spec: {config: "{}", conifg: "typo"}
`)
	if err := cluster.ApplyStrict(ctxT(t), bad); err == nil || !strings.Contains(err.Error(), "conifg") {
		t.Errorf("a NAD with an unknown field applied (err %v): validation is not strict", err)
	}
}
