package spoof

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
)

// scalePort is the i-th of many attachments.
func scalePort(i int) Port {
	return Port{
		Name: fmt.Sprintf("tb%013x", i),
		MAC:  net.HardwareAddr{0x52, 0x54, 0, byte(i >> 16), byte(i >> 8), byte(i)},
		IPs: []net.IP{net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)),
			net.ParseIP(fmt.Sprintf("fd00::%x:%x", i>>16+1, i&0xffff))},
	}
}

// opNames are the measured operations, in report order. "commit" is the
// transaction alone (sendmsg to last ack), "close" the release of its
// netlink socket, which is where the kernel waits for an RCU grace period.
var opNames = []string{"Ensure(new)", "Ensure(again)", "Verify", "Delete",
	"Ensure commit", "Ensure close", "Delete commit", "Delete close"}

// measure runs each operation on port p iters times and returns medians.
func measure(p Port, iters int) (map[string]time.Duration, error) {
	samples := map[string][]time.Duration{}
	timed := func(name string, fn func() error) error {
		start := time.Now()
		err := fn()
		samples[name] = append(samples[name], time.Since(start))
		return err
	}
	for range iters {
		err := errors.Join(
			timed("Ensure(new)", func() error { return Ensure(p) }),
			timed("Ensure(again)", func() error { return Ensure(p) }),
			timed("Verify", func() error { return Verify(p) }),
			timed("Delete", func() error { return Delete(p.Name) }),
			split(timed, "Ensure", func(c *nftables.Conn) error { queueEnsure(c, p); return nil }),
			split(timed, "Delete", func(c *nftables.Conn) error { c.DelTable(tableOf(p.Name)); return nil }),
		)
		if err != nil {
			return nil, err
		}
	}
	medians := map[string]time.Duration{}
	for name, d := range samples {
		medians[name] = median(d)
	}
	return medians, nil
}

// split runs one transaction over a lasting socket so that the commit and
// the socket's close are timed apart.
func split(timed func(string, func() error) error, op string, queue func(*nftables.Conn) error) error {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return err
	}
	if err := queue(c); err != nil {
		return err
	}
	return errors.Join(timed(op+" commit", c.Flush), timed(op+" close", c.CloseLasting))
}

func median(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)/2]
}

// TestScaling shows that one port's Ensure and Delete cost about the same
// with 1 or 500 other ports installed (no call touches another port's
// table). It logs the numbers rather than asserting them: timings under
// -race or on a busy machine are too noisy for a hard bound. What it
// asserts is that every call works with 500 ports around; the namespace's
// removal takes the tables with it.
func TestScaling(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("skipping: installs 500 ports for timing")
	}
	h := newNS(t, randHex(t, 4), "host")
	probe := scalePort(0xfffff)
	in(t, h, func() error {
		if err := addDevices(probe.Name); err != nil {
			return err
		}
		installed := 0
		for _, n := range []int{1, 500} {
			for ; installed < n; installed++ {
				if err := addDevices(scalePort(installed).Name); err != nil {
					return err
				}
				if err := Ensure(scalePort(installed)); err != nil {
					return err
				}
			}
			m, err := measure(probe, 50)
			if err != nil {
				return err
			}
			line := fmt.Sprintf("%3d ports installed, median µs:", n)
			for _, name := range opNames {
				line += fmt.Sprintf("  %s %d", name, m[name].Microseconds())
			}
			t.Log(line)
		}
		return Verify(scalePort(250))
	})
}
