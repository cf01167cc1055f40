package redirect

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tapbridge/tapbridge-cni/internal/failpoint"
)

// features is what CheckKernel probes; it is part of CheckKey, so a
// binary that probes more does not trust what an older one found.
const features = "tun ingress u32 mirred"

const bootIDPath = "/proc/sys/kernel/random/boot_id"

// CheckKey is what a passed CheckKernel may be kept under: the boot ID (a
// reboot may bring another kernel or other modules) and what was probed.
func CheckKey() (string, error) {
	data, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	id := strings.TrimSpace(string(data))
	if id == "" {
		return "", fmt.Errorf("read boot id: %s is empty", bootIDPath)
	}
	return id + " " + features, nil
}

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
	// Tests see by this failpoint whether a call probed (made a netns).
	if err := failpoint.Hit("kernel-probe"); err != nil {
		return err
	}
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
