package main

import (
	"testing"
	"time"
)

func TestPerCall(t *testing.T) {
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
