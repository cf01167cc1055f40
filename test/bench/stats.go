package main

import (
	"slices"
	"time"
)

// percentile is the nearest-rank percentile (p in 0..100) of samples.
func percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	rank := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

// median of float64 values (the mean of the middle two for an even count).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medianInt is the median of integer samples.
func medianInt(v []int64) float64 {
	f := make([]float64, len(v))
	for i, x := range v {
		f[i] = float64(x)
	}
	return median(f)
}

// ms converts a duration to float milliseconds, fromMS back.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fromMS(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

// quantiles are the three latency figures every control-plane row shows.
type quantiles struct{ P50, P90, P99 float64 } // ms

func quantilesOf(s []time.Duration) quantiles {
	return quantiles{ms(percentile(s, 50)), ms(percentile(s, 90)), ms(percentile(s, 99))}
}

// medianQuantiles takes the median of each figure over runs.
func medianQuantiles(runs []quantiles) quantiles {
	var a, b, c []float64
	for _, q := range runs {
		a, b, c = append(a, q.P50), append(b, q.P90), append(c, q.P99)
	}
	return quantiles{median(a), median(b), median(c)}
}
