package guest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Probe is one parsed "TBPROBE <kind> <target> ok|fail [rtt=<ms>]" line.
type Probe struct {
	Kind   string        // "ping" or "tcp"
	Target string        // "10.99.0.1" or "10.99.0.1:7777"
	OK     bool          // the probe succeeded (possibly after retries)
	RTT    time.Duration // average round trip of a successful ping, else 0
	Line   string        // the line as printed, from "TBPROBE" on
}

// ParseProbe parses a console line holding a TBPROBE record; ok is false
// for any other line.
func ParseProbe(line string) (p Probe, ok bool) {
	i := strings.Index(line, "TBPROBE ")
	if i < 0 {
		return Probe{}, false
	}
	p.Line = strings.TrimSpace(line[i:])
	f := strings.Fields(p.Line)
	if len(f) < 4 {
		return Probe{}, false
	}
	p.Kind, p.Target, p.OK = f[1], f[2], f[3] == "ok"
	for _, kv := range f[4:] {
		if v, found := strings.CutPrefix(kv, "rtt="); found {
			if ms, err := strconv.ParseFloat(v, 64); err == nil {
				p.RTT = time.Duration(ms * float64(time.Millisecond))
			}
		}
	}
	return p, true
}

var errConsoleClosed = errors.New("console closed")

// ansiEscape matches the terminal control sequences SeaBIOS prints
// (reset, clear screen, ...), which would otherwise prefix our lines.
var ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|[A-Za-z])`)

// console collects the guest's serial output line by line and lets
// callers wait for a line.
type console struct {
	copyTo io.Writer
	done   chan struct{} // closed when the output has been read to EOF

	mu      sync.Mutex
	lines   []string
	closed  bool
	changed chan struct{} // closed and replaced on every new line and at EOF
}

// newConsole reads r until EOF, then closes it.
func newConsole(r io.ReadCloser, copyTo io.Writer) *console {
	c := &console{copyTo: copyTo, done: make(chan struct{}), changed: make(chan struct{})}
	go c.read(r)
	return c
}

func (c *console) read(r io.ReadCloser) {
	defer close(c.done)
	defer r.Close()
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			c.add(ansiEscape.ReplaceAllString(strings.TrimRight(line, "\r\n"), ""))
		}
		if err != nil {
			break
		}
	}
	c.mu.Lock()
	c.closed = true
	close(c.changed)
	c.mu.Unlock()
}

func (c *console) add(line string) {
	if c.copyTo != nil {
		// A failing copy must not stop the collection the tests rely on.
		_, _ = io.WriteString(c.copyTo, line+"\n")
	}
	c.mu.Lock()
	c.lines = append(c.lines, line)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// waitFor returns the first line, from the start of the output, that
// contains marker.
func (c *console) waitFor(ctx context.Context, marker string) (string, error) {
	next := 0
	for {
		c.mu.Lock()
		lines, closed, changed := c.lines[next:], c.closed, c.changed
		c.mu.Unlock()
		for _, l := range lines {
			if strings.Contains(l, marker) {
				return l, nil
			}
		}
		next += len(lines)
		if closed {
			return "", errConsoleClosed
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("wait for %q on the guest console: %w", marker, ctx.Err())
		case <-changed:
		}
	}
}

func (c *console) snapshot() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}
