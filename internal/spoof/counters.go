package spoof

import (
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Counts are a port's counters: the frames its chain dropped as spoofed
// (or of a kind the guest may not send), and the requests it kept off the
// L2 for the node agent.
type Counts struct {
	Dropped, DroppedBytes         uint64
	Intercepted, InterceptedBytes uint64
}

// ErrNoTable is returned by ReadCounts for a port without a table.
var ErrNoTable = errors.New("port has no anti-spoofing table")

// ReadCounts reads the counters of one port's chain (see CountReader).
func ReadCounts(port string) (Counts, error) {
	r, err := NewCountReader()
	if err != nil {
		return Counts{}, fmt.Errorf("read counters of port %s: %w", port, err)
	}
	defer r.Close()
	return r.Read(port)
}

// CountReader reads ports' counters over one netlink socket, so reading
// every port of the node (a metrics scrape) opens one socket, not one
// per port.
type CountReader struct {
	c *nftables.Conn
}

// NewCountReader opens the socket; Close closes it.
func NewCountReader() (*CountReader, error) {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	return &CountReader{c: c}, nil
}

// Close closes the reader's socket.
func (r *CountReader) Close() error { return r.c.CloseLasting() }

// Read reads the counters of one port's chain: a GETTABLE and one
// GETRULE dump of the port's own chain. A rule counts as an intercept
// rule when it is one of interceptRules, counters aside.
func (r *CountReader) Read(port string) (Counts, error) {
	if err := checkIfName("port", port); err != nil {
		return Counts{}, fmt.Errorf("read counters of port %s: %w", port, err)
	}
	t := tableOf(port)
	// A dump of a missing chain is empty, not an error: look at the table.
	if _, err := r.c.ListTableOfFamily(t.Name, t.Family); errors.Is(err, unix.ENOENT) {
		return Counts{}, fmt.Errorf("read counters of port %s: %w", port, ErrNoTable)
	}
	rules, err := r.c.GetRules(t, chainOf(t, port))
	if err != nil {
		return Counts{}, fmt.Errorf("read counters of port %s: %w", port, err)
	}
	intercept := interceptRules()
	var n Counts
	for _, rule := range rules {
		packets, bytes, ok := ruleCounter(rule.Exprs)
		if !ok {
			continue
		}
		if slices.ContainsFunc(intercept, func(want []expr.Any) bool { return sameExprs(rule.Exprs, want) }) {
			n.Intercepted += packets
			n.InterceptedBytes += bytes
		} else {
			n.Dropped += packets
			n.DroppedBytes += bytes
		}
	}
	return n, nil
}

// ruleCounter is the counter of a rule that ends in drop; every counted
// rule of a port chain drops.
func ruleCounter(exprs []expr.Any) (packets, bytes uint64, ok bool) {
	if len(exprs) < 2 {
		return 0, 0, false
	}
	v, isVerdict := exprs[len(exprs)-1].(*expr.Verdict)
	ctr, isCounter := exprs[len(exprs)-2].(*expr.Counter)
	if !isVerdict || !isCounter || v.Kind != expr.VerdictDrop {
		return 0, 0, false
	}
	return ctr.Packets, ctr.Bytes, true
}
