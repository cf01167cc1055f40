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

// scalePort is the i-th of many attachments on bridge br0.
func scalePort(i int) Port {
	return Port{
		Bridge: "br0",
		Name:   fmt.Sprintf("tb%013x", i),
		MAC:    net.HardwareAddr{0x52, 0x54, 0, byte(i >> 16), byte(i >> 8), byte(i)},
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
			timed("Delete", func() error { return Delete(p.Bridge, p.Name) }),
			split(timed, "Ensure", func(c *nftables.Conn) error { return queueEnsure(c, p, false) }),
			split(timed, "Delete", func(c *nftables.Conn) error { return queueDelete(c, p.Bridge, p.Name, true) }),
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
// with 1 or 500 other ports installed (neither lists the table). It logs
// the numbers rather than asserting them: timings under -race or on a busy
// machine are too noisy for a hard bound.
func TestScaling(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("skipping: installs 500 ports for timing")
	}
	h := newNS(t, randHex(t, 4), "host")
	probe := scalePort(0xfffff)
	in(t, h, func() error {
		installed := 0
		for _, n := range []int{1, 500} {
			for ; installed < n; installed++ {
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
		if err := Verify(scalePort(250)); err != nil {
			return err
		}
		if err := DeleteTable("br0"); err != nil {
			return err
		}
		return wantNoTables()
	})
}
