package arp

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// result is what one InUse call returned and how long it took.
type result struct {
	inUse bool
	err   error
	took  time.Duration
}

// probeIn calls InUse inside netns n, on a locked OS thread.
func probeIn(n ns.NetNS, ctx context.Context, ifindex int, ip string, opts Options) result {
	var r result
	if err := n.Do(func(ns.NetNS) error {
		r = probeHere(ctx, ifindex, ip, opts)
		return nil
	}); err != nil {
		r.err = err
	}
	return r
}

// probeHere calls InUse in the current thread's namespace and times it.
func probeHere(ctx context.Context, ifindex int, ip string, opts Options) result {
	start := time.Now()
	inUse, err := InUse(ctx, ifindex, netip.MustParseAddr(ip), opts)
	return result{inUse: inUse, err: err, took: time.Since(start)}
}

// These fail before any socket is opened or frame sent, so they are safe to
// run in the root namespace and need no privileges.
func TestInUseRejectsBadInput(t *testing.T) {
	const noSuchLink = 1 << 30
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name   string
		ctx    context.Context
		ip     netip.Addr
		opts   Options
		prefix string
	}{
		{"zero addr", context.Background(), netip.Addr{}, Options{}, "probe invalid IP on ifindex 1073741824: "},
		{"ipv6", context.Background(), netip.MustParseAddr("2001:db8::7"), Options{}, "probe 2001:db8::7 on ifindex 1073741824: not an IPv4 address"},
		{"multicast ip", context.Background(), netip.MustParseAddr("224.0.0.1"), Options{}, "probe 224.0.0.1 on ifindex 1073741824: "},
		{"negative count", context.Background(), netip.MustParseAddr("192.0.2.1"), Options{Count: -1}, "probe 192.0.2.1 on ifindex 1073741824: "},
		{"no such link", context.Background(), netip.MustParseAddr("192.0.2.1"), Options{}, "probe 192.0.2.1 on ifindex 1073741824: look up link: "},
		{"cancelled", cancelled, netip.MustParseAddr("192.0.2.1"), Options{}, "probe 192.0.2.1 on ifindex 1073741824: context canceled"},
	}
	for _, tt := range tests {
		inUse, err := InUse(tt.ctx, noSuchLink, tt.ip, tt.opts)
		if err == nil || inUse {
			t.Errorf("%s: InUse = %v, %v; want an error", tt.name, inUse, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), tt.prefix) {
			t.Errorf("%s: error %q does not start with %q", tt.name, err, tt.prefix)
		}
	}
	if _, err := InUse(cancelled, noSuchLink, netip.MustParseAddr("192.0.2.1"), Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: error %v does not wrap context.Canceled", err)
	}
}

func TestInUse(t *testing.T) {
	s := newSegment(t)
	if addrs, err := s.addrsOfA(); err != nil || len(addrs) != 0 {
		t.Fatalf("a0 should have no address, has %v (err %v)", addrs, err)
	}
	// Never returning early, a free address costs the whole schedule.
	const freeTakes = (DefaultCount-1)*DefaultInterval + DefaultWait

	tests := []struct {
		ip   string
		want bool
	}{
		{"192.0.2.7", true},
		{"192.0.2.8", false},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			r := probeIn(s.a, context.Background(), s.aIndex, tt.ip, Options{})
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.inUse != tt.want {
				t.Fatalf("InUse(%s) = %v, want %v", tt.ip, r.inUse, tt.want)
			}
			t.Logf("InUse(%s) = %v in %v", tt.ip, r.inUse, r.took)
			if tt.want && r.took >= freeTakes {
				t.Errorf("took %v: a taken address should be reported on the first answer", r.took)
			}
			if !tt.want && r.took < freeTakes {
				t.Errorf("took %v: a free address should be watched for at least %v", r.took, freeTakes)
			}
		})
	}
}

// Two hosts probing for the same free address at the same time must not both
// find it free: each treats the other's probe as a conflict (RFC 5227 2.1.1). Both backing off is common but not guaranteed: if B's first
// probe leaves just before A's socket is bound, B then hears A and stops
// probing, and A rightly finds the address free. Both missing the other would
// need each to send before the other listened, which cannot happen.
func TestInUseSimultaneousProbes(t *testing.T) {
	s := newSegment(t)
	// The probing windows must overlap: each side must have its socket open
	// before the other's last probe. Entering a namespace can stall for tens
	// of milliseconds on a busy machine, so both start from a barrier inside
	// their namespace, and the window is wider than the default.
	opts := Options{Count: 3, Interval: 100 * time.Millisecond}
	for _, ip := range []string{"192.0.2.9"} {
		t.Run(ip, func(t *testing.T) {
			var ready, done sync.WaitGroup
			start := make(chan struct{})
			results := make([]result, 2)
			probe := func(i int, n ns.NetNS, ifindex int) {
				err := n.Do(func(ns.NetNS) error {
					ready.Done()
					<-start
					results[i] = probeHere(context.Background(), ifindex, ip, opts)
					return nil
				})
				if err != nil { // the probe's own error stays unless entering the netns failed
					results[i].err = err
				}
			}
			ready.Add(2)
			done.Go(func() { probe(0, s.a, s.aIndex) })
			done.Go(func() { probe(1, s.b, s.bIndex) })
			ready.Wait()
			close(start)
			done.Wait()

			a, b := results[0], results[1]
			if a.err != nil || b.err != nil {
				t.Fatalf("errors: A %v, B %v", a.err, b.err)
			}
			if !a.inUse && !b.inUse {
				t.Errorf("A and B both found %s free", ip)
			}
			t.Logf("InUse from A = %v, from B = %v", a.inUse, b.inUse)
		})
	}
}

func TestInUseCancel(t *testing.T) {
	s := newSegment(t)
	// A free address and a long wait: only cancellation can end these early.
	long := Options{Wait: time.Minute}
	const prompt = 500 * time.Millisecond // generous for -race on a busy box

	for _, ip := range []string{"192.0.2.8"} {
		t.Run(ip+"/cancel", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			timer := time.AfterFunc(100*time.Millisecond, cancel)
			defer timer.Stop()
			r := probeIn(s.a, ctx, s.aIndex, ip, long)
			if !errors.Is(r.err, context.Canceled) || r.inUse {
				t.Fatalf("InUse = %v, %v; want context.Canceled", r.inUse, r.err)
			}
			if r.took > 100*time.Millisecond+prompt {
				t.Errorf("returned %v after start, cancelled at 100ms", r.took)
			}
			t.Logf("cancelled at 100ms, returned at %v: %v", r.took, r.err)
		})
		t.Run(ip+"/deadline", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			r := probeIn(s.a, ctx, s.aIndex, ip, long)
			if !errors.Is(r.err, context.DeadlineExceeded) || r.inUse {
				t.Fatalf("InUse = %v, %v; want context.DeadlineExceeded", r.inUse, r.err)
			}
			if r.took > 100*time.Millisecond+prompt {
				t.Errorf("returned %v after start, deadline at 100ms", r.took)
			}
		})
		t.Run(ip+"/already-cancelled", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			r := probeIn(s.a, ctx, s.aIndex, ip, long)
			if !errors.Is(r.err, context.Canceled) || r.took > prompt {
				t.Fatalf("InUse = %v, %v after %v; want context.Canceled at once", r.inUse, r.err, r.took)
			}
		})
	}
}
