package kube

import (
	"strings"
	"testing"
)

func TestParseRequests(t *testing.T) {
	page := `# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 12
apiserver_request_total{code="409",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="status",verb="GET",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="",scope="",subresource="/metrics",verb="GET",version=""} 40
apiserver_request_duration_seconds_count{verb="PUT",resource="leases"} 99
apiserver_response_sizes_sum{component="apiserver",group="",resource="pods",scope="resource",subresource="status",verb="GET",version="v1"} 2048
`
	got, err := ParseRequests(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Count) != 2 || got.Count["PUT leases"] != 15 || got.Count["GET pods/status"] != 2 {
		t.Fatalf("counts %v, want PUT leases 15 and GET pods/status 2 only (codes summed, no object: left out)", got.Count)
	}
	if len(got.Bytes) != 1 || got.Bytes["GET pods/status"] != 2048 {
		t.Fatalf("bytes %v, want GET pods/status 2048", got.Bytes)
	}
}
