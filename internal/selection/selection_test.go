package selection

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	els, err := Parse(`[{"name":"vmnet13","namespace":"default","interface":"pod1a2b","ipam-claim-reference":"vm1.flat"},{"name":"other"}]`)
	if err != nil || len(els) != 2 {
		t.Fatal(err, els)
	}
	e, ok := Find(els, "vmnet13", "pod1a2b")
	if !ok || e.Claim != "vm1.flat" {
		t.Fatalf("find: %v %+v", ok, e)
	}
	if e, ok := Find(els, "other", "net1"); !ok || e.Claim != "" {
		t.Fatalf("an element without interface matches: %v %+v", ok, e)
	}
	if _, ok := Find(els, "vmnet3", "net1"); ok {
		t.Fatal("found a network the pod does not ask for")
	}
	short, err := Parse("ns1/vmnet3@eth1, vmnet13")
	if err != nil || len(short) != 2 || short[0].Namespace != "ns1" || short[0].Interface != "eth1" || short[1].Name != "vmnet13" {
		t.Fatalf("short form: %v %+v", err, short)
	}
}

func TestMalformed(t *testing.T) {
	for _, v := range []string{`[{"name":`, `[{"interface":"x"}]`, `a@`, `/x`, `[{"name":"n","ips":["10.0.0.1"],"ipam-claim-reference":"c"}]`} {
		if _, err := Parse(v); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v", v, err)
		}
	}
	if els, err := Parse("  "); err != nil || els != nil {
		t.Errorf("empty: %v %v", els, err)
	}
}

// Two elements of one network without interfaces are ambiguous.
func TestAmbiguous(t *testing.T) {
	els, _ := Parse(`[{"name":"n"},{"name":"n"}]`)
	if _, ok := Find(els, "n", "net1"); ok {
		t.Fatal("picked one of two elements")
	}
}
