package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tapbridge/tapbridge-cni/internal/attachment"
	"github.com/tapbridge/tapbridge-cni/test/harness"
)

// AgentMetrics is where each node's agent serves /metrics: inside the
// node's netns, as the DaemonSet's hostNetwork agent does on its node.
const AgentMetrics = "127.0.0.1:9741"

// agentStartLimit bounds an agent's start on a loaded machine.
const agentStartLimit = 30 * time.Second

// agent is the node's tapbridge-agent process, started by PID in the
// node's netns on the node's dataDir, as the DaemonSet runs it; its JSON
// log is appended to AgentLogFile across restarts.
type agent struct {
	proc *harness.Proc
	log  *os.File
}

// AgentLogFile is the node agent's log (every run's, appended).
func (n *Node) AgentLogFile() string { return filepath.Join(n.Dir, "agent.log") }

// StartAgent starts the node's agent and waits for its start line. It is
// killed by PID when the cluster closes (or by KillAgent).
func (n *Node) StartAgent(ctx context.Context) error {
	if n.c.opts.Agent == "" {
		return errors.New("start agent: the cluster has no agent binary (Options.Agent)")
	}
	n.mu.Lock()
	running := n.agent != nil
	n.mu.Unlock()
	if running {
		return fmt.Errorf("start agent on %s: already running", n.Name)
	}
	f, err := os.OpenFile(n.AgentLogFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start agent on %s: %w", n.Name, err)
	}
	from, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return err
	}
	var p *harness.Proc
	err = n.NS.Do(func() (err error) {
		p, err = harness.Start(f, n.c.opts.Agent, "-data-dir", n.StateDir(), "-metrics-addr", AgentMetrics, "-log-level", "debug")
		return err
	})
	if err != nil {
		f.Close()
		return fmt.Errorf("start agent on %s: %w", n.Name, err)
	}
	n.mu.Lock()
	n.agent = &agent{proc: p, log: f}
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, agentStartLimit)
	defer cancel()
	if _, err := n.WaitAgentLog(ctx, from, func(l AgentLogLine) bool { return l.Msg == "tapbridge-agent started" }); err != nil {
		return errors.Join(fmt.Errorf("start agent on %s: %w", n.Name, err), n.KillAgent())
	}
	return nil
}

// KillAgent sends the node's agent SIGKILL, by PID, and reaps it. It is
// a no-op when no agent runs.
func (n *Node) KillAgent() error {
	n.mu.Lock()
	a := n.agent
	n.agent = nil
	n.mu.Unlock()
	if a == nil {
		return nil
	}
	_, err := a.proc.Kill()
	return errors.Join(err, a.log.Close())
}

// AgentPID is the PID of the node's agent, 0 when none runs.
func (n *Node) AgentPID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.agent == nil {
		return 0
	}
	return n.agent.proc.Cmd.Process.Pid
}

// AgentLogLine is one line of the agent's JSON log, as far as the tests
// read it.
type AgentLogLine struct {
	Time       time.Time `json:"time"`
	Level      string    `json:"level"`
	Msg        string    `json:"msg"`
	Attachment string    `json:"attachment"`
	Protocol   string    `json:"protocol"`
	Type       string    `json:"type"`
	Reason     string    `json:"reason"`

	Offset int64 `json:"-"` // where the line starts in AgentLogFile
}

// AgentLog returns the lines of the agent's log from offset on.
func (n *Node) AgentLog(offset int64) ([]AgentLogLine, error) {
	b, err := os.ReadFile(n.AgentLogFile())
	if err != nil {
		return nil, fmt.Errorf("read agent log of %s: %w", n.Name, err)
	}
	if offset > int64(len(b)) {
		offset = int64(len(b))
	}
	var out []AgentLogLine
	for pos := offset; pos < int64(len(b)); {
		end := bytes.IndexByte(b[pos:], '\n')
		if end < 0 {
			break // a line being written
		}
		var l AgentLogLine
		if json.Unmarshal(b[pos:pos+int64(end)], &l) == nil {
			l.Offset = pos
			out = append(out, l)
		}
		pos += int64(end) + 1
	}
	return out, nil
}

// AgentLogEnd is the current end of the agent's log: an offset for
// AgentLog and WaitAgentLog that skips what was logged so far.
func (n *Node) AgentLogEnd() int64 {
	fi, err := os.Stat(n.AgentLogFile())
	if err != nil {
		return 0
	}
	return fi.Size()
}

// WaitAgentLog waits for a line from offset on that match accepts.
func (n *Node) WaitAgentLog(ctx context.Context, offset int64, match func(AgentLogLine) bool) (AgentLogLine, error) {
	for {
		lines, err := n.AgentLog(offset)
		if err != nil {
			return AgentLogLine{}, err
		}
		for _, l := range lines {
			if match(l) {
				return l, nil
			}
		}
		select {
		case <-ctx.Done():
			return AgentLogLine{}, fmt.Errorf("wait for the agent log of %s: %w", n.Name, ctx.Err())
		case <-time.After(20 * time.Millisecond): // the log file has no change event to await cheaply
		}
	}
}

// Key is the pod's attachment key: the agent logs it as "attachment".
func (p *Pod) Key() string {
	return attachment.For(attachment.ID{ContainerID: p.ContainerID, IfName: p.IfName}).Key
}

// Metrics scrapes the node agent's /metrics from inside the node netns
// (the connection is made there, then read from anywhere).
func (n *Node) Metrics() (Metrics, error) {
	var conn net.Conn
	if err := n.NS.Do(func() (err error) { conn, err = net.DialTimeout("tcp", AgentMetrics, 5*time.Second); return err }); err != nil {
		return nil, fmt.Errorf("scrape the agent of %s: %w", n.Name, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET /metrics HTTP/1.0\r\nHost: agent\r\n\r\n"); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, fmt.Errorf("scrape the agent of %s: %w", n.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape the agent of %s: %s %v", n.Name, resp.Status, err)
	}
	m := Metrics{}
	for _, l := range strings.Split(string(body), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if v, err := strconv.ParseFloat(l[i+1:], 64); i > 0 && err == nil {
			m[l[:i]] = v
		}
	}
	return m, nil
}

// Metrics are one scrape: value by series as exposed ("name{labels}").
type Metrics map[string]float64

// Get is the series' value, 0 when absent (a counter not incremented yet).
func (m Metrics) Get(series string) float64 { return m[series] }
