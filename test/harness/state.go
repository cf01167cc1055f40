package harness

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// Scope says where a node's state is: its host netns and bridges, the
// pod netns to look into, and the plugin's and host-local's dirs.
type Scope struct {
	Host     Netns
	Bridges  []string
	Pods     []Netns // those already removed are left out of the State
	StateDir string
	IPAMDir  string
}

// State is a node's state as the tests see it: the one model behind
// both "the node is as it was" (Diff against a baseline) and "the node
// holds exactly these attachments" (Live).
type State struct {
	Host     Kernel
	Pods     map[string]Kernel // by netns name
	StateDir StateDir
	IPAM     IPAMDir
}

// Read reads the node's state.
func Read(sc Scope) (State, error) {
	s := State{Pods: map[string]Kernel{}}
	err := sc.Host.Do(func() (err error) {
		s.Host, err = readKernel(true, sc.Bridges)
		return err
	})
	if err != nil {
		return s, fmt.Errorf("read host %s: %w", sc.Host.Name, err)
	}
	for _, p := range sc.Pods {
		if _, err := os.Stat(p.Path()); err != nil {
			continue
		}
		err := p.Do(func() error {
			k, err := readKernel(false, nil)
			s.Pods[p.Name] = k
			return err
		})
		if err != nil {
			return s, fmt.Errorf("read pod %s: %w", p.Name, err)
		}
	}
	if sc.StateDir != "" {
		if s.StateDir, err = ReadStateDir(sc.StateDir); err != nil {
			return s, err
		}
	}
	if sc.IPAMDir != "" {
		s.IPAM, err = ReadIPAMDir(sc.IPAMDir)
	}
	return s, err
}

// Without drops the named pods.
func (s State) Without(pods ...string) State {
	out := s
	out.Pods = map[string]Kernel{}
	for k, v := range s.Pods {
		out.Pods[k] = v
	}
	for _, p := range pods {
		delete(out.Pods, p)
	}
	return out
}

// Diff describes how t differs from s, or "" if it does not: links, tc
// filters, bridge addresses, routes and nft tables of the host; links
// and tc filters of each pod; the files of the state and IPAM dirs.
func (s State) Diff(t State) string {
	a, b := s.flat(), t.flat()
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var out []string
	for k := range keys {
		if strings.Join(a[k], ",") != strings.Join(b[k], ",") {
			out = append(out, fmt.Sprintf("%s:\n  before %v\n  after  %v", k, a[k], b[k]))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func (s State) flat() map[string][]string {
	m := map[string][]string{}
	s.Host.flat(m, "host")
	for name, k := range s.Pods {
		k.flat(m, "pod "+name)
	}
	for b, addrs := range s.Host.Addrs {
		for _, a := range addrs {
			m["addrs "+b] = append(m["addrs "+b], a.String())
		}
	}
	for b, entries := range s.Host.FDB {
		m["fdb "+b] = entries
	}
	m["routes"] = s.Host.Routes
	for t, n := range s.Host.Nft {
		m["nft"] = append(m["nft"], fmt.Sprintf("%s(%d chains)", t, n))
	}
	sort.Strings(m["nft"])
	m["files state"], m["files ipam"] = s.StateDir.Files, s.IPAM.Files
	for k, v := range m {
		if len(v) == 0 {
			delete(m, k)
		}
	}
	return m
}

func (k Kernel) flat(m map[string][]string, where string) {
	for _, l := range k.Links {
		m[where+" links"] = append(m[where+" links"], l.String())
		if l.Filters > 0 {
			m[where+" tc"] = append(m[where+" tc"], fmt.Sprintf("%s:%d filters", l.Name, l.Filters))
		}
	}
}
