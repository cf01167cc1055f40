package main

import (
	"time"

	"golang.org/x/sys/unix"
)

// pageFaultCost is what the first touch of an anonymous page costs this
// machine, the median of a few rounds: the kernel's fault path, which a
// hypervisor can make many times dearer than a syscall, and which every
// new process pays for each page of heap, stack and data it uses.
func pageFaultCost() (time.Duration, error) {
	const pages = 4096 // 16 MiB: small enough to be quick, large enough to time
	page := unix.Getpagesize()
	var rounds []float64
	for range 5 {
		mem, err := unix.Mmap(-1, 0, pages*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return 0, err
		}
		// Small pages, as a process's heap and stacks mostly get.
		if err := unix.Madvise(mem, unix.MADV_NOHUGEPAGE); err != nil {
			return 0, err
		}
		t0 := time.Now()
		for i := 0; i < len(mem); i += page {
			mem[i] = 1
		}
		rounds = append(rounds, float64(time.Since(t0))/pages)
		if err := unix.Munmap(mem); err != nil {
			return 0, err
		}
	}
	return time.Duration(median(rounds)), nil
}
