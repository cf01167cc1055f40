package arp

import (
	"net/netip"
	"testing"
	"time"
)

func TestOptionsDefaults(t *testing.T) {
	got, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := Options{Count: 2, Interval: 50 * time.Millisecond, Wait: 200 * time.Millisecond}
	if got != want {
		t.Errorf("defaults = %+v, want %+v", got, want)
	}

	set := Options{Count: 5, Interval: time.Second, Wait: time.Minute}
	if got, _ := set.withDefaults(); got != set {
		t.Errorf("withDefaults changed explicit options to %+v", got)
	}
}

func TestOptionsRejectNegative(t *testing.T) {
	for _, o := range []Options{{Count: -1}, {Interval: -1}, {Wait: -1}} {
		if _, err := o.withDefaults(); err == nil {
			t.Errorf("withDefaults(%+v) accepted a negative value", o)
		}
	}
}

func TestTargetAddr(t *testing.T) {
	valid := map[string]string{
		"192.0.2.7":        "192.0.2.7",
		"::ffff:192.0.2.7": "192.0.2.7", // IPv4-mapped
	}
	for in, want := range valid {
		got, err := targetAddr(netip.MustParseAddr(in))
		if err != nil || got.String() != want {
			t.Errorf("targetAddr(%s) = %v, %v; want %s", in, got, err, want)
		}
	}
	invalid := []netip.Addr{{}}
	for _, in := range []string{"0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "ff02::1", "2001:db8::7", "fe80::1"} {
		invalid = append(invalid, netip.MustParseAddr(in))
	}
	for _, in := range invalid {
		if got, err := targetAddr(in); err == nil {
			t.Errorf("targetAddr(%v) = %v, want an error", in, got)
		}
	}
}
