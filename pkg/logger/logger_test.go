package logger

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// The lines must read as slog's TextHandler writes them, byte for byte.
func TestMatchesSlogTextHandler(t *testing.T) {
	at := time.Date(2026, 12, 1, 20, 0, 0, 123e6, time.UTC)
	var ours, theirs bytes.Buffer
	l := New(&ours, Debug).With("command", "ADD", "containerID", "c0ffee", "network", "vm net")
	l.now = func() time.Time { return at }
	s := slog.New(slog.NewTextHandler(&theirs, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				a.Value = slog.TimeValue(at)
			}
			return a
		},
	})).With("command", "ADD", "containerID", "c0ffee", "network", "vm net")

	err := errors.New(`veth "tb1" exists: file exists`)
	records := []struct {
		level slog.Level
		msg   string
		kv    []any
	}{
		{slog.LevelDebug, "step done", []any{"step", "veth"}},
		{slog.LevelWarn, "step failed", []any{"step", "ipam", "err", err}},
		{slog.LevelInfo, "ADD done", nil},
		{slog.LevelError, "ADD failed", []any{"err", err, "n", 3, "empty", "", "ctl", "a\tb", "eq", "a=b", "uni", "é"}},
		{slog.LevelInfo, "odd", []any{"lonely"}},
		{slog.LevelInfo, "quoting", []any{"del", "a\x7fb", "bs", `a\b`, "repl", "a\ufffdb", "bad", "a\xffb",
			"nbsp", "a\u00a0b", "nl", "a\nb", "key with space", 1}},
		{slog.LevelInfo, "kinds", []any{"dur", 1500 * time.Millisecond, "bool", true, "struct", struct{ A int }{1},
			"nilerr", (*pathErr)(nil), 42, "after a non-string key"}},
	}
	for _, r := range records {
		l.log(Level(r.level), r.msg, r.kv)
		s.Log(context.Background(), r.level, r.msg, r.kv...)
	}
	if ours.String() != theirs.String() {
		t.Fatalf("ours:\n%s\nslog:\n%s", ours.String(), theirs.String())
	}
}

// pathErr is an error type whose Error method panics on a nil receiver,
// as fmt (and so slog) must cope with.
type pathErr struct{ path string }

func (e *pathErr) Error() string { return "bad path " + e.path }

func TestLevels(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, Warn)
	l.Debug("no")
	l.Info("no")
	l.Warn("yes")
	l.Error("yes")
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Fatalf("%d lines at level warn, want 2:\n%s", n, buf.String())
	}
	for _, s := range []string{"debug", "INFO", "Warn", "error"} {
		if _, err := ParseLevel(s); err != nil {
			t.Errorf("ParseLevel(%q): %v", s, err)
		}
	}
	if _, err := ParseLevel("verbose"); err == nil {
		t.Error("ParseLevel accepted verbose")
	}
	Discard().Error("nothing")
}
