package main

import (
	"testing"
	"time"
)

func TestParseRequests(t *testing.T) {
	page := []byte(`# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 12
apiserver_request_total{code="409",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="status",verb="GET",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="",scope="",subresource="/metrics",verb="GET",version=""} 40
apiserver_request_duration_seconds_count{verb="PUT",resource="leases"} 99
`)
	got, err := parseRequests(page)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"PUT leases": 15, "GET pods/status": 2}
	if len(got) != len(want) || got["PUT leases"] != 15 || got["GET pods/status"] != 2 {
		t.Fatalf("got %v, want %v", got, want)
	}
	a := apiSample{reqs: map[string]float64{"PUT leases": 15}}
	z := apiSample{reqs: map[string]float64{"PUT leases": 35, "POST ipallocations": 10}, cpu: time.Second}
	per := perCall(a, z, 10)
	if per["PUT leases"] != 2 || per["POST ipallocations"] != 1 || per.total() != 3 {
		t.Fatalf("perCall: %v", per)
	}
	if s := per.String(); s != "3.00 (PUT leases 2.00, POST ipallocations 1.00)" {
		t.Fatalf("String: %q", s)
	}
}
