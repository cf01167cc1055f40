// Package agent is the node agent's core: it watches the plugin's records
// in dataDir and, on its own host port (a packet socket per port, see
// port), serves the guest of every ready record of a served network and
// learns the link-local of every one of a learning network, until the
// record goes. It keeps no state of its own: the records and the ports'
// tables are the truth, read again in full at start and whenever inotify
// lost events.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// Options configures an Agent.
type Options struct {
	Dir      string // the plugin's dataDir
	Log      *slog.Logger
	Registry prometheus.Registerer // where the agent's metrics go
}

// Agent serves the guests of one dataDir. Its ports live in the calling
// process's network namespace, the node's (hostNetwork).
type Agent struct {
	reader state.Reader
	dir    string
	log    *slog.Logger
	m      *metrics
	lls    *linkLocals // who holds which link-local on the node
	mu     sync.Mutex
	ports  map[string]*port // by attachment key; guarded by mu (the metrics collector reads it)

	// ops serialises what changes the served set: the watch loop's
	// updates and the retries of ports that failed to start.
	ops     sync.Mutex
	retries map[string]*time.Timer // by attachment key; guarded by ops
	stopped bool                   // Run has returned; guarded by ops
}

// retryAfter is how long a port that failed to start (its device or the
// bridge not found, a socket error) waits before it is tried again: the
// agent has no other event that would bring it back.
const retryAfter = 2 * time.Second

// New makes an agent; Run starts it.
func New(o Options) *Agent {
	a := &Agent{reader: state.NewReader(o.Dir), dir: o.Dir, log: o.Log, ports: map[string]*port{}, lls: newLinkLocals(),
		retries: map[string]*time.Timer{}}
	a.m = newMetrics(o.Registry, a.servedPorts)
	return a
}

// Run serves until ctx is done (nil then) or the records directory can no
// longer be watched, and stops serving every port before it returns.
func (a *Agent) Run(ctx context.Context) error {
	// The plugin makes the layout on its first ADD; the agent may come
	// first, and needs the directory to watch it.
	if _, err := state.Open(a.dir); err != nil {
		return err
	}
	w, err := newWatcher(a.reader.RecordsDir())
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = w.close() })
	defer stop()
	defer a.stopAll()
	// Watch first, then read everything: a record published in between
	// is seen twice, which serve tolerates, rather than never.
	a.resync()
	buf := make([]byte, 64*1024)
	for {
		changes, err := w.read(buf)
		if ctx.Err() != nil {
			return nil
		}
		a.apply(changes)
		if err != nil {
			_ = w.close()
			return fmt.Errorf("watch records: %w", err)
		}
	}
}

func (a *Agent) apply(changes []change) {
	for _, c := range changes {
		if c.overflow {
			a.log.Warn("inotify queue overflowed: reading every record again")
			a.resync()
			continue
		}
		if key, ok := state.KeyOf(c.name); ok {
			a.update(key)
		}
	}
}

// resync makes the watched set match the records on disk. Every port's
// learned link-local is read before any port starts, so no guest can
// claim, in between, what another one's table holds.
func (a *Agent) resync() {
	a.ops.Lock()
	defer a.ops.Unlock()
	if a.stopped {
		return
	}
	recs, err := a.reader.Records()
	unreadable := unreadableKeys(err)
	if err != nil {
		a.log.Error("read records", "err", err)
		if recs == nil && len(unreadable) == 0 {
			return // the listing itself failed: change nothing
		}
	}
	want := map[string]state.Record{}
	all := map[string]bool{}
	for key := range unreadable {
		all[key] = true // an unreadable record keeps what it had
	}
	for _, r := range recs {
		all[r.Key] = true
		a.know(r)
		if watched(r) {
			want[r.Key] = r
		}
	}
	a.lls.keep(all)
	for _, key := range a.servedKeys() {
		if _, ok := want[key]; !ok && !unreadable[key] {
			a.unserve(key)
		}
	}
	for key, r := range want {
		a.serve(key, r)
	}
}

// know records what rec says of the link-locals on the node: its guest's
// EUI-64 one, and what a learning port's table holds.
func (a *Agent) know(rec state.Record) {
	if mac, err := net.ParseMAC(rec.MAC); err == nil {
		a.lls.setEUI(rec.Key, mac)
	}
	if rec.LearnLinkLocal && rec.HostIf != "" {
		if err := a.lls.load(rec.Key, rec.HostIf); err != nil {
			a.log.Error("read learned link-locals", "attachment", rec.Key, "port", rec.HostIf, "err", err)
		}
	}
}

// unreadableKeys are the attachments whose record Records could not
// decode: their ports are left as they are (serving the record as it was
// last read) rather than stopped for a read that may work next time.
func unreadableKeys(err error) map[string]bool {
	keys := map[string]bool{}
	var walk func(error)
	walk = func(err error) {
		if u, ok := err.(*state.UnreadableError); ok {
			keys[u.Key] = true
			return
		}
		switch e := err.(type) {
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				walk(inner)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	if err != nil {
		walk(err)
	}
	return keys
}

// update brings one attachment's port in line with its record.
func (a *Agent) update(key string) {
	a.ops.Lock()
	defer a.ops.Unlock()
	if a.stopped {
		return
	}
	rec, err := a.reader.Record(key)
	switch {
	case errors.Is(err, state.ErrNotFound):
		a.lls.forget(key)
		a.unserve(key)
	case err != nil:
		// Keep the port as it is: a record that cannot be read now is
		// still the attachment's, and stopping would cut its guest off.
		a.log.Error("read record", "attachment", key, "err", err)
	default:
		a.know(rec)
		if !watched(rec) {
			a.unserve(key)
			return
		}
		a.serve(key, rec)
	}
}

// serve starts serving rec, unless its port already serves exactly rec
// on the same device (a DEL and ADD of the same attachment can write an
// identical record for a new device). A port that fails to start is
// tried again after retryAfter, until its record goes.
func (a *Agent) serve(key string, rec state.Record) {
	a.mu.Lock()
	old := a.ports[key]
	a.mu.Unlock()
	if old != nil && reflect.DeepEqual(old.rec, rec) && old.ifindex == ifindexOf(rec.HostIf) {
		return
	}
	if old != nil {
		a.unserve(key)
	}
	if t := a.retries[key]; t != nil {
		t.Stop()
		delete(a.retries, key)
	}
	p, err := startPort(key, rec, a.m, a.log, a.lls)
	if err == nil && old != nil && old.labels == p.labels {
		// The same series goes on counting: starting again at 0 would
		// read as a counter reset and lose the old socket's last drops.
		p.dropped.Add(old.dropped.Load())
	}
	if err != nil {
		a.m.portErrors.Inc()
		a.log.Error("serve attachment", "attachment", key, "port", rec.HostIf, "err", err, "retry", retryAfter)
		a.retries[key] = time.AfterFunc(retryAfter, func() { a.update(key) })
		return
	}
	a.mu.Lock()
	a.ports[key] = p
	a.m.served.Set(float64(len(a.ports)))
	a.mu.Unlock()
	p.log.Info("serving")
}

func (a *Agent) unserve(key string) {
	if t := a.retries[key]; t != nil {
		t.Stop()
		delete(a.retries, key)
	}
	a.mu.Lock()
	p := a.ports[key]
	delete(a.ports, key)
	a.m.served.Set(float64(len(a.ports)))
	a.mu.Unlock()
	if p != nil {
		p.stop()
		p.log.Info("stopped serving", "dropped_frames", p.dropped.Load())
	}
}

func (a *Agent) stopAll() {
	a.ops.Lock()
	defer a.ops.Unlock()
	a.stopped = true // a retry already firing finds nothing to do
	for key, t := range a.retries {
		t.Stop()
		delete(a.retries, key)
	}
	for _, key := range a.servedKeys() {
		a.unserve(key)
	}
}

func (a *Agent) servedKeys() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	keys := make([]string, 0, len(a.ports))
	for k := range a.ports {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (a *Agent) servedPorts() []*port {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*port, 0, len(a.ports))
	for _, p := range a.ports {
		out = append(out, p)
	}
	return out
}
