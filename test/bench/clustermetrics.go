package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// apiSample is what the API server had done at one moment: its request
// counts by verb and resource (apiserver_request_total), and the CPU
// time of kube-apiserver and etcd.
type apiSample struct {
	reqs map[string]float64 // "VERB resource[/subresource]"
	cpu  time.Duration
}

// reqCounts are requests per call by "VERB resource".
type reqCounts map[string]float64

func (r reqCounts) total() float64 {
	var t float64
	for _, v := range r {
		t += v
	}
	return t
}

// String lists the counts, largest first: "7.00 (PUT leases 2.00, …)".
func (r reqCounts) String() string {
	keys := slices.Collect(maps.Keys(r))
	slices.SortFunc(keys, func(a, b string) int {
		if r[a] != r[b] {
			if r[a] > r[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys {
		if r[k] >= 0.005 {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, r[k]))
		}
	}
	return fmt.Sprintf("%.2f (%s)", r.total(), strings.Join(parts, ", "))
}

// perCall is (b − a) / n by key.
func perCall(a, b apiSample, n int) reqCounts {
	out := reqCounts{}
	for k, v := range b.reqs {
		if d := v - a.reqs[k]; d > 0 {
			out[k] = d / float64(n)
		}
	}
	return out
}

// meanCounts averages per-call counts over runs (a mean, so that the
// parts add up to the total).
func meanCounts(runs []reqCounts) reqCounts {
	out := reqCounts{}
	for _, r := range runs {
		for k, v := range r {
			out[k] += v / float64(len(runs))
		}
	}
	return out
}

// sample scrapes /metrics (as admin) and reads both processes' CPU time.
func (w *clusterIPAM) sample(ctx context.Context) (apiSample, error) {
	reqs, err := w.c.Requests()
	if err != nil {
		return apiSample{}, fmt.Errorf("scrape /metrics: %w", err)
	}
	s := apiSample{reqs: reqs.Count}
	api, etcd := w.c.PIDs()
	for _, pid := range []int{api, etcd} {
		cpu, err := processCPU(pid)
		if err != nil {
			return apiSample{}, err
		}
		s.cpu += cpu
	}
	return s, nil
}

// processCPU is utime+stime of a process from /proc/<pid>/stat.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:])) // from field 3 (state) on
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	return time.Duration(utime+stime) * (time.Second / 100), nil // USER_HZ
}
