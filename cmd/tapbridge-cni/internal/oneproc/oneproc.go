// Package oneproc gives the plugin one P (GOMAXPROCS=1) before any other
// package's init allocates. The plugin's Go code is serial, and a second P
// mostly wakes and spins threads at each hand-off (figures: the bench's
// design notes).
//
// It is a package of its own, and not an init in main, because of when
// it runs. Go initialises packages in import-path order as soon as their
// imports are, so this one (which imports only runtime) runs before the
// standard library's and the CNI libraries' inits; main's init runs last.
// Called from main, GOMAXPROCS destroyed whichever P the main goroutine
// happened to be on, in about half the execs, with the memory every init
// had allocated from it: its spans went back to the heap's lists and the
// remaining P faulted in new ones: about 60 page faults, 11-15% of an
// exec's (≈1 ms at this VM's 15 µs per fault). Here, nothing has been
// allocated yet.
package oneproc

import "runtime"

func init() { runtime.GOMAXPROCS(1) }
