package state

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"sort"
)

// Reader reads the state directory for anyone but the plugin (the node
// agent, tests, an operator). It takes no lock and writes nothing, so it
// never delays a plugin call; it is safe alongside writers because every
// file is published whole: a record is a claim or complete, never torn. A
// listing is not a snapshot: what vanishes while it runs is skipped, and
// what appears may be missed.
type Reader struct {
	dir string
}

// NewReader reads the state directory dir (a network's dataDir).
func NewReader(dir string) Reader {
	return Reader{dir: dir}
}

// Records lists every attachment's record, sorted by key, claims included
// (Record.Ready tells them apart). A record that cannot be decoded is an
// *UnreadableError (ErrUnreadable), reported after the others are read.
func (r Reader) Records() ([]Record, error) {
	keys, err := listKeys(r.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	sort.Strings(keys)
	out := make([]Record, 0, len(keys))
	var errs []error
	for _, key := range keys {
		rec, err := getRecord(r.dir, key)
		switch {
		case errors.Is(err, ErrNotFound): // deleted since the listing
		case err != nil:
			errs = append(errs, err)
		default:
			out = append(out, rec)
		}
	}
	return out, errors.Join(errs...)
}

// Record reads the record of one attachment key, or ErrNotFound.
func (r Reader) Record(key string) (Record, error) {
	return getRecord(r.dir, key)
}

// RecordPath is the file of key's record, for an operator (or a test) to
// inspect or repair one that is reported unreadable.
func (r Reader) RecordPath(key string) string {
	return recordPath(r.dir, key)
}

// Bridges lists the bridges with state, sorted.
func (r Reader) Bridges() ([]string, error) {
	entries, err := os.ReadDir(bridgesDir(r.dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list bridges: %w", err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// SubnetView is what a reader sees of one (bridge, subnet).
type SubnetView struct {
	Subnet netip.Prefix
	Users  []string     // attachment keys, sorted
	Owned  netip.Prefix // the address tapbridge added; invalid when it uses the admin's, or has none yet
}

// Subnets lists the bridge's subnets with their users and owned address,
// sorted by subnet. A subnet whose state goes while it is read is skipped.
func (r Reader) Subnets(bridge string) ([]SubnetView, error) {
	subnets, err := (&Store{Dir: r.dir}).Bridge(bridge).Subnets()
	if err != nil {
		return nil, err
	}
	var out []SubnetView
	for _, s := range subnets {
		v, ok, err := view(s)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Subnet.String() < out[j].Subnet.String() })
	return out, nil
}

func view(s Subnet) (SubnetView, bool, error) {
	users, err := s.Users().Members()
	if err != nil {
		return SubnetView{}, false, err
	}
	owned, _, err := s.Owned()
	if err != nil {
		return SubnetView{}, false, err
	}
	if len(users) == 0 && !owned.IsValid() {
		return SubnetView{}, false, nil // gone, or going
	}
	sort.Strings(users)
	return SubnetView{Subnet: s.Prefix, Users: users, Owned: owned}, true, nil
}

// HandOvers is how many times the bridge's lock has been taken through
// Bridge.Lock (0 when it never was). Every change to the bridge's state is
// made under the lock, so while the count stays the same no new holder has
// come to change it.
func (r Reader) HandOvers(bridge string) (uint64, error) {
	f, err := os.Open(lockPath((&Store{Dir: r.dir}).Bridge(bridge).dir))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read lock of bridge %s: %w", bridge, err)
	}
	defer f.Close()
	return handOvers(f), nil
}

// RecordsDir is the directory of the records, for a reader that watches
// it (inotify) instead of listing it again and again. A record is
// published by a rename into it and removed by an unlink; its claim
// appears by a link. KeyOf names the attachment of an entry.
func (r Reader) RecordsDir() string { return recordDir(r.dir) }

// KeyOf is the attachment key of an entry of RecordsDir; ok is false for
// anything else (a record being staged, a stray file).
func KeyOf(name string) (key string, ok bool) { return recordKey(name) }
