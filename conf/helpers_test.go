package conf

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/tapbridge/tapbridge-cni/internal/config"
)

// doc is one YAML document, decoded.
type doc struct {
	where string
	body  map[string]any
}

func (d doc) kind() string { return d.str("kind") }

func (d doc) get(path ...string) any {
	var v any = d.body
	for _, p := range path {
		m, _ := v.(map[string]any)
		v = m[p]
	}
	return v
}

func (d doc) str(path ...string) string         { s, _ := d.get(path...).(string); return s }
func (d doc) obj(path ...string) map[string]any { m, _ := d.get(path...).(map[string]any); return m }

func (d doc) list(path ...string) []map[string]any {
	items, _ := d.get(path...).([]any)
	var out []map[string]any
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// yamlDocs parses every document of every .yaml/.yml file under conf/;
// each must have apiVersion, kind and metadata.name.
func yamlDocs(t *testing.T) []doc {
	t.Helper()
	var out []doc
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (!strings.HasSuffix(path, ".yaml") && !strings.HasSuffix(path, ".yml")) {
			return err
		}
		for i, part := range docSeparator.Split(string(mustRead(t, path)), -1) {
			where := fmt.Sprintf("%s#%d", path, i)
			js, err := yaml.YAMLToJSON([]byte(part))
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			var body map[string]any
			if err := json.Unmarshal(js, &body); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			if body == nil {
				continue // only comments
			}
			dd := doc{where: where, body: body}
			if dd.str("apiVersion") == "" || dd.kind() == "" || dd.str("metadata", "name") == "" {
				t.Errorf("%s: lacks apiVersion, kind or metadata.name", where)
			}
			out = append(out, dd)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("no YAML documents under conf/")
	}
	return out
}

// ipamConf is the part of host-local, whereabouts and static configs
// that says which addresses they hand out.
type ipamConf struct {
	Type   string `json:"type"`
	Ranges [][]struct {
		Subnet     string   `json:"subnet"`
		RangeStart string   `json:"rangeStart"`
		RangeEnd   string   `json:"rangeEnd"`
		Exclude    []string `json:"exclude"` // tapbridge-ipam
	} `json:"ranges"`
	Range      string   `json:"range"`       // whereabouts
	RangeStart string   `json:"range_start"` // whereabouts
	RangeEnd   string   `json:"range_end"`   // whereabouts
	Exclude    []string `json:"exclude"`     // whereabouts
	Addresses  []struct {
		Address string `json:"address"`
	} `json:"addresses"` // static
}

// allocRange is from..to, less the excluded prefixes.
type allocRange struct {
	from, to netip.Addr
	exclude  []netip.Prefix
}

func (r allocRange) String() string { return r.from.String() + "-" + r.to.String() }

func (r allocRange) contains(a netip.Addr) bool {
	if a.Less(r.from) || r.to.Less(a) {
		return false
	}
	for _, x := range r.exclude {
		if x.Contains(a) {
			return false
		}
	}
	return true
}

// overlaps reports whether the range may hand out any address of p (a
// host address as a /32 or /128, or a pool).
func (r allocRange) overlaps(p netip.Prefix) bool {
	for a := p.Addr(); p.Contains(a); a = a.Next() {
		if r.contains(a) {
			return true
		}
	}
	return false
}

func (r allocRange) overlapsRange(o allocRange) bool {
	return !(r.to.Less(o.from) || o.to.Less(r.from))
}

func (c ipamConf) ranges() ([]allocRange, error) {
	var out []allocRange
	switch c.Type {
	case "host-local":
		for _, set := range c.Ranges {
			for _, r := range set {
				ar, err := span(r.Subnet, r.RangeStart, r.RangeEnd, nil)
				if err != nil {
					return nil, err
				}
				out = append(out, ar)
			}
		}
	case "tapbridge-ipam":
		for _, set := range c.Ranges {
			for _, r := range set {
				excl, err := prefixes(r.Exclude)
				if err != nil {
					return nil, err
				}
				ar, err := span(r.Subnet, r.RangeStart, r.RangeEnd, excl)
				if err != nil {
					return nil, err
				}
				out = append(out, ar)
			}
		}
	case "whereabouts":
		var excl []netip.Prefix
		for _, x := range c.Exclude {
			p, err := netip.ParsePrefix(x)
			if err != nil {
				return nil, fmt.Errorf("whereabouts exclude %q: %w", x, err)
			}
			excl = append(excl, p)
		}
		ar, err := span(c.Range, c.RangeStart, c.RangeEnd, excl)
		if err != nil {
			return nil, err
		}
		out = append(out, ar)
	case "static":
		for _, a := range c.Addresses {
			p, err := netip.ParsePrefix(a.Address)
			if err != nil {
				return nil, fmt.Errorf("static address %q: %w", a.Address, err)
			}
			out = append(out, allocRange{from: p.Addr(), to: p.Addr()})
		}
	case "":
	default:
		return nil, fmt.Errorf("IPAM type %q: the test does not know its ranges", c.Type)
	}
	return out, nil
}

// prefixes reads tapbridge-ipam's exclude list: prefixes or addresses.
func prefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, x := range list {
		p, err := netip.ParsePrefix(x)
		if err != nil {
			a, aerr := netip.ParseAddr(x)
			if aerr != nil {
				return nil, fmt.Errorf("exclude %q: %w", x, err)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// span is subnet's usable addresses, narrowed to start..end when given.
func span(subnet, start, end string, excl []netip.Prefix) (allocRange, error) {
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return allocRange{}, fmt.Errorf("IPAM subnet %q: %w", subnet, err)
	}
	p = p.Masked()
	r := allocRange{from: p.Addr().Next(), to: lastAddr(p).Prev(), exclude: excl}
	for s, dst := range map[string]*netip.Addr{start: &r.from, end: &r.to} {
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || !p.Contains(a) {
			return allocRange{}, fmt.Errorf("IPAM range bound %q is not an address of %s", s, p)
		}
		*dst = a
	}
	return r, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	host := p.Addr().BitLen() - p.Bits()
	for i := len(b) - 1; host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// hostAddresses lists every static address (of every node) and every
// pool range of the hostAddress object.
func hostAddresses(h config.RawHostAddress) []netip.Prefix {
	var out []netip.Prefix
	for _, list := range h.Static {
		for _, s := range list {
			if p, err := netip.ParsePrefix(s); err == nil {
				out = append(out, netip.PrefixFrom(p.Addr(), p.Addr().BitLen()))
			}
		}
	}
	for _, s := range h.Pool {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}
