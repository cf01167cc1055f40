package kube

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Requests is what the API server counted, from its /metrics: requests
// (apiserver_request_total) and bytes answered (the sum of
// apiserver_response_sizes, which counts reads only), each by
// "VERB resource[/subresource]".
type Requests struct {
	Count, Bytes map[string]float64
}

var labelRE = regexp.MustCompile(`(\w+)="([^"]*)"`)

// Requests reads the counters now; Sub of two readings is what happened
// in between.
func (c *Cluster) Requests() (Requests, error) {
	hc, err := c.adminHTTP()
	if err != nil {
		return Requests{}, err
	}
	resp, err := hc.Get(Server() + "/metrics")
	if err != nil {
		return Requests{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return Requests{}, fmt.Errorf("/metrics: %s: %s", resp.Status, b)
	}
	return ParseRequests(resp.Body)
}

// ParseRequests reads a /metrics page's request counts and answer sizes.
func ParseRequests(page io.Reader) (Requests, error) {
	r := Requests{Count: map[string]float64{}, Bytes: map[string]float64{}}
	sc := bufio.NewScanner(page)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var into map[string]float64
		switch {
		case strings.HasPrefix(line, "apiserver_request_total{"):
			into = r.Count
		case strings.HasPrefix(line, "apiserver_response_sizes_sum{"):
			into = r.Bytes
		default:
			continue
		}
		open, end := strings.IndexByte(line, '{'), strings.LastIndexByte(line, '}')
		v, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
		if err != nil {
			return Requests{}, fmt.Errorf("/metrics line %q: %w", line, err)
		}
		l := map[string]string{}
		for _, m := range labelRE.FindAllStringSubmatch(line[open:end], -1) {
			l[m[1]] = m[2]
		}
		if l["resource"] == "" {
			continue // /metrics, /readyz and the like: no object touched
		}
		key := l["verb"] + " " + l["resource"]
		if l["subresource"] != "" {
			key += "/" + l["subresource"]
		}
		into[key] += v
	}
	return r, sc.Err()
}

// Sub is r less an earlier reading, keeping only the resources named
// (all when none).
func (r Requests) Sub(before Requests, resources ...string) Requests {
	out := Requests{Count: map[string]float64{}, Bytes: map[string]float64{}}
	for _, p := range []struct{ into, now, then map[string]float64 }{{out.Count, r.Count, before.Count}, {out.Bytes, r.Bytes, before.Bytes}} {
		for k, v := range p.now {
			if d := v - p.then[k]; d != 0 && keep(k, resources) {
				p.into[k] = d
			}
		}
	}
	return out
}

func keep(key string, resources []string) bool {
	if len(resources) == 0 {
		return true
	}
	_, res, _ := strings.Cut(key, " ")
	res, _, _ = strings.Cut(res, "/")
	for _, r := range resources {
		if r == res {
			return true
		}
	}
	return false
}

// Total is the sum of a map of Requests.
func Total(m map[string]float64) float64 {
	var t float64
	for _, v := range m {
		t += v
	}
	return t
}
