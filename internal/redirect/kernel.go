package redirect

import (
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// CheckKernel checks that the kernel has what the data path needs (tun,
// the ingress qdisc, u32, mirred) by building a redirect on loopback in a
// throwaway netns: the only honest feature test, and it touches nothing of
// the host's.
func CheckKernel() error {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("kernel lacks tun: %w", err)
	}
	errc := make(chan error, 1)
	// A fresh thread that exits afterwards: the scratch netns dies with it.
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded
		errc <- redirectInScratchNetns()
	}()
	return <-errc
}

func redirectInScratchNetns() error {
	scratch, err := netns.New()
	if err != nil {
		return fmt.Errorf("create scratch netns: %w", err)
	}
	defer scratch.Close()
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in scratch netns: %w", err)
	}
	if err := netlink.QdiscAdd(ingress(lo)); err != nil {
		return fmt.Errorf("kernel lacks the ingress qdisc: %w", err)
	}
	if err := netlink.FilterAdd(filter(lo, lo)); err != nil {
		return fmt.Errorf("kernel lacks the u32 classifier or the mirred action: %w", err)
	}
	return nil
}
