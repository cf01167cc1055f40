package guest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// qmp is a client of the QEMU Machine Protocol on QEMU's unix socket: one
// command at a time, asynchronous events skipped.
type qmp struct {
	conn net.Conn
	r    *bufio.Reader
}

// qmpMessage is any message QEMU sends: a greeting, a reply or an event.
type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string `json:"event"`
}

// dialQMP connects to the socket QEMU listens on (retrying while QEMU is
// still creating it), reads the greeting and leaves capabilities
// negotiation, so commands can be sent.
func dialQMP(ctx context.Context, path string) (*qmp, error) {
	var conn net.Conn
	for {
		var err error
		var d net.Dialer
		conn, err = d.DialContext(ctx, "unix", path)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to qmp %s: %w (last: %v)", path, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	q := &qmp{conn: conn, r: bufio.NewReader(conn)}
	if err := q.greeting(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	if err := q.execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmp) greeting(ctx context.Context) error {
	m, err := q.read(ctx)
	if err != nil {
		return fmt.Errorf("read qmp greeting: %w", err)
	}
	if m.QMP == nil {
		return fmt.Errorf("read qmp greeting: unexpected message %+v", m)
	}
	return nil
}

func (q *qmp) read(ctx context.Context) (qmpMessage, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Minute)
	}
	_ = q.conn.SetReadDeadline(deadline)
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		return qmpMessage{}, err
	}
	var m qmpMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return qmpMessage{}, fmt.Errorf("decode %q: %w", line, err)
	}
	return m, nil
}

// execute runs one command and decodes its return value into out (when
// not nil).
func (q *qmp) execute(ctx context.Context, command string, args any, out any) error {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	_ = q.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		m, err := q.read(ctx)
		if err != nil {
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		switch {
		case m.Event != "":
			continue
		case m.Error != nil:
			return fmt.Errorf("qmp %s: %s: %s", command, m.Error.Class, m.Error.Desc)
		case m.Return == nil:
			return fmt.Errorf("qmp %s: reply without return", command)
		case out != nil:
			if err := json.Unmarshal(m.Return, out); err != nil {
				return fmt.Errorf("qmp %s: decode reply: %w", command, err)
			}
		}
		return nil
	}
}

func (q *qmp) close() error {
	if err := q.conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}
