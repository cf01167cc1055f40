// Package store keeps tapbridge's node state on disk: one record per
// attachment, per-bridge locks, and name sets used as reference counts.
// Every write is atomic (a file appears whole or not at all), so a SIGKILL
// at any instant leaves no torn state for the next call to trip on.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrExists is returned when an attachment already has a record.
var ErrExists = errors.New("already exists")

// ErrNotFound is returned when an attachment has no record.
var ErrNotFound = errors.New("not found")

// Store is rooted at the configured dataDir, shared by every network on
// the node that uses the same dataDir.
type Store struct {
	Dir string
}

// Record is what DEL and GC need to find an attachment without the
// runtime's help (CNI_NETNS may be unset, prevResult absent).
type Record struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
	Network     string `json:"network"`
	Bridge      string `json:"bridge"`
	Netns       string `json:"netns"`
	HostIf      string `json:"hostIf"`
	Tap         string `json:"tap"`
	MAC         string `json:"mac"`
}

// Open makes sure the layout exists and is writable.
func Open(dir string) (*Store, error) {
	s := &Store{Dir: dir}
	for _, d := range []string{s.recordDir(), filepath.Join(dir, "bridges")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create state dir: %w", err)
		}
	}
	return s, nil
}

func (s *Store) recordDir() string            { return filepath.Join(s.Dir, "attachments") }
func (s *Store) recordPath(key string) string { return filepath.Join(s.recordDir(), key+".json") }

// Create publishes a record; it fails with ErrExists if the key has one,
// which is what makes a second ADD of a live attachment fail early.
func (s *Store) Create(key string, r Record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode record %s: %w", key, err)
	}
	return createExclusive(s.recordPath(key), data)
}

// Get reads one record.
func (s *Store) Get(key string) (Record, error) {
	var r Record
	data, err := os.ReadFile(s.recordPath(key))
	if errors.Is(err, fs.ErrNotExist) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("read record %s: %w", key, err)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("decode record %s: %w", key, err)
	}
	return r, nil
}

// Delete removes a record; nil if it is already gone.
func (s *Store) Delete(key string) error {
	if err := os.Remove(s.recordPath(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete record %s: %w", key, err)
	}
	return nil
}

// Keys lists every recorded attachment. Only GC calls it.
func (s *Store) Keys() ([]string, error) {
	entries, err := os.ReadDir(s.recordDir())
	if err != nil {
		return nil, fmt.Errorf("list records: %w", err)
	}
	keys := make([]string, 0, len(entries))
	for _, e := range entries {
		if key, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			keys = append(keys, key)
		}
	}
	return keys, nil
}

// BridgeDir is where state shared by every attachment of one bridge lives.
func (s *Store) BridgeDir(bridge string) string {
	return filepath.Join(s.Dir, "bridges", bridge)
}

// Writable reports whether new state can be written (STATUS).
func (s *Store) Writable() error {
	f, err := os.CreateTemp(s.Dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("state dir %s is not writable: %w", s.Dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}
