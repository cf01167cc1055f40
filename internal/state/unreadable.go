package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// ErrUnreadable is returned for a record whose content cannot be used:
// torn, empty, not a record, or of a version this build does not read.
// The record still names its attachment (the key) and still works as its
// lock (flock does not read the content), so DEL and GC go on without it;
// CHECK reports it.
var ErrUnreadable = errors.New("unreadable record")

// UnreadableError is an unreadable record: which one, and why. Salvaged
// holds the leading fields that could be read before the damage (a record
// torn by a power loss keeps its first bytes); the key is a digest of
// containerID and ifname, so a caller can tell whether to trust them.
type UnreadableError struct {
	Key      string
	Path     string
	Version  int // the record's version when this build does not read it, else 0
	Salvaged Record
	Err      error
}

func (e *UnreadableError) Error() string {
	return fmt.Sprintf("record %s (%s) is unreadable: %v", e.Key, e.Path, e.Err)
}

func (e *UnreadableError) Unwrap() []error { return []error{ErrUnreadable, e.Err} }

// unreadable describes why data is not a record this build can use.
func unreadable(key string, data []byte, err error) *UnreadableError {
	e := &UnreadableError{Key: key, Err: err, Salvaged: salvage(data)}
	e.Salvaged.Key = key
	return e
}

// salvage decodes the leading string fields of a damaged record, up to
// the damage.
func salvage(data []byte) Record {
	var r Record
	fields := map[string]*string{
		"containerID": &r.ContainerID, "ifname": &r.IfName, "network": &r.Network,
		"bridge": &r.Bridge, "netns": &r.Netns,
	}
	d := json.NewDecoder(bytes.NewReader(data))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return r
	}
	for {
		t, err := d.Token()
		name, ok := t.(string)
		if err != nil || !ok {
			return r
		}
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return r
		}
		if dst, ok := fields[name]; ok {
			_ = json.Unmarshal(v, dst) // a field of another type stays empty
		}
	}
}
