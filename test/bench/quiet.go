package main

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The machine is shared: other people's tests come and go. Two defences:
// batches wait (boundedly) for a quiet moment before they start, and each
// section records how much CPU other processes used while it ran.

// cpuSample is busy CPU time of the whole machine and of this process
// with its waited-for children.
type cpuSample struct {
	at         time.Time
	busy, ours time.Duration
}

func sampleCPU() cpuSample {
	s := cpuSample{at: time.Now()}
	data, err := os.ReadFile("/proc/stat")
	if err == nil {
		line, _, _ := strings.Cut(string(data), "\n")
		f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
		var busy int64
		for i := 1; i < len(f) && i <= 8; i++ {
			if i == 4 || i == 5 { // idle, iowait
				continue
			}
			v, _ := strconv.ParseInt(f[i], 10, 64)
			busy += v
		}
		s.busy = time.Duration(busy) * (time.Second / 100) // USER_HZ
	}
	for _, who := range []int{unix.RUSAGE_SELF, unix.RUSAGE_CHILDREN} {
		var ru unix.Rusage
		if unix.Getrusage(who, &ru) == nil {
			s.ours += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return s
}

// foreignLoad is the share of all CPUs that other processes (and kernel
// threads) kept busy between two samples.
func foreignLoad(a, b cpuSample) float64 {
	wall := b.at.Sub(a.at) * time.Duration(runtime.NumCPU())
	if wall <= 0 {
		return 0
	}
	return max(0, float64(b.busy-a.busy-(b.ours-a.ours))/float64(wall))
}

// waitQuiet waits until other processes use less than a third of the
// CPUs over a short window, for at most quietMax.
func (b *bench) waitQuiet(ctx context.Context) {
	const window, quietMax = 250 * time.Millisecond, 2 * time.Second
	t0 := time.Now()
	for time.Since(t0) < quietMax && ctx.Err() == nil {
		a := sampleCPU()
		time.Sleep(window)
		if foreignLoad(a, sampleCPU()) < 0.33 {
			break
		}
	}
	b.waited += time.Since(t0)
}
