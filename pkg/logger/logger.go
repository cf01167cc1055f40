// Package logger writes the plugin's log: one line of key=value pairs per
// record, in the format of log/slog's TextHandler, so tools that read
// slog's text output read this too:
//
//	time=2026-12-01T20:00:00.000Z level=WARN msg="step failed" command=ADD containerID=… step=veth err="…"
//
// It exists instead of log/slog because the plugin is exec'd for every
// pod operation and every package it links is code the kernel maps in at
// each exec: slog and its handler were about 90 KiB of the binary, which
// took the plugin's peak RSS above the upstream bridge plugin's. It
// implements only what the plugin uses: levels, attributes bound once
// with With, and records.
package logger

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Level is a record's severity; the values are slog's.
type Level int

const (
	Debug Level = -4
	Info  Level = 0
	Warn  Level = 4
	Error Level = 8
)

var levelNames = map[Level]string{Debug: "DEBUG", Info: "INFO", Warn: "WARN", Error: "ERROR"}

func (l Level) String() string {
	if name, ok := levelNames[l]; ok {
		return name
	}
	return fmt.Sprintf("LEVEL(%d)", int(l))
}

// ParseLevel reads debug, info, warn or error, in any case.
func ParseLevel(s string) (Level, error) {
	for l, name := range levelNames {
		if strings.EqualFold(s, name) {
			return l, nil
		}
	}
	return 0, fmt.Errorf("unknown log level %q", s)
}

// Logger writes records at or above its level to w. Each record is one
// Write of one line, so with a file opened O_APPEND the lines of
// concurrent plugin processes do not interleave.
type Logger struct {
	w     io.Writer
	min   Level
	bound []byte // " key=value" pairs added by With
	now   func() time.Time
}

// New returns a logger writing records at level min and above to w.
func New(w io.Writer, min Level) *Logger { return &Logger{w: w, min: min, now: time.Now} }

// Discard is a logger that writes nothing.
func Discard() *Logger { return New(io.Discard, Error+1) }

// With returns a logger that adds the key-value pairs to every record.
func (l *Logger) With(kv ...any) *Logger {
	c := *l
	c.bound = appendPairs(append([]byte(nil), l.bound...), kv)
	return &c
}

func (l *Logger) Debug(msg string, kv ...any) { l.log(Debug, msg, kv) }
func (l *Logger) Info(msg string, kv ...any)  { l.log(Info, msg, kv) }
func (l *Logger) Warn(msg string, kv ...any)  { l.log(Warn, msg, kv) }
func (l *Logger) Error(msg string, kv ...any) { l.log(Error, msg, kv) }

func (l *Logger) log(level Level, msg string, kv []any) {
	if level < l.min {
		return
	}
	b := make([]byte, 0, 256)
	b = append(b, "time="...)
	b = l.now().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, " level="...)
	b = append(b, level.String()...)
	b = append(b, " msg="...)
	b = appendValue(b, msg)
	b = append(b, l.bound...)
	b = appendPairs(b, kv)
	b = append(b, '\n')
	_, _ = l.w.Write(b) // a log that cannot be written must not fail the call
}

// appendPairs appends " key=value" for each pair. As in slog, an argument
// where a key should be that is not a string, or a lone last key, is
// logged as the value of the key !BADKEY.
func appendPairs(b []byte, kv []any) []byte {
	for len(kv) > 0 {
		key, isKey := kv[0].(string)
		var val any
		switch {
		case !isKey:
			key, val, kv = "!BADKEY", kv[0], kv[1:]
		case len(kv) == 1:
			key, val, kv = "!BADKEY", key, nil
		default:
			val, kv = kv[1], kv[2:]
		}
		b = append(b, ' ')
		b = appendValue(b, key)
		b = append(b, '=')
		b = appendValue(b, text(val))
	}
	return b
}

// text formats a value as slog's TextHandler does for the kinds the
// plugin logs: strings as they are, anything else with %+v (errors,
// numbers, durations).
func text(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprintf("%+v", v)
}

// appendValue quotes s when slog's TextHandler would (see needsQuoting).
func appendValue(b []byte, s string) []byte {
	if needsQuoting(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

// needsQuoting is slog's rule: empty; an ASCII space, '=', '"' or control
// character (DEL is left alone, as JSON does); or a non-ASCII rune that
// is invalid UTF-8 (or U+FFFD), a space, or not printable.
func needsQuoting(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c == ' ' || c == '=' || c == '"' || c < 0x20 {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}
