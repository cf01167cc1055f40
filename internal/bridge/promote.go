package bridge

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Secondary reports whether the kernel holds the IPv4 address as a
// secondary of another address in the same subnet (with the same prefix
// length): deleting that primary deletes it too, unless promotion is on.
func (a Addr) Secondary() bool { return a.Flags&unix.IFA_F_SECONDARY != 0 }

// Promotion is the bridge's promote_secondaries switch, read from the
// calling thread's netns: the kernel promotes a secondary when its
// primary is deleted if either the bridge's value or "all" is non-zero.
type Promotion struct {
	Value string // net/ipv4/conf/<bridge>/promote_secondaries, as the kernel prints it
	All   string // net/ipv4/conf/all/promote_secondaries
}

// On reports whether the kernel promotes this bridge's secondaries now.
func (p Promotion) On() bool { return p.Value != "0" || p.All != "0" }

func promotePath(dev string) string {
	return "/proc/sys/net/ipv4/conf/" + dev + "/promote_secondaries"
}

// Promotion reads the bridge's switch.
func (b *Bridge) Promotion() (Promotion, error) {
	v, err := readSysctl(promotePath(b.Name))
	if err != nil {
		return Promotion{}, err
	}
	all, err := readSysctl(promotePath("all"))
	if err != nil {
		return Promotion{}, err
	}
	return Promotion{Value: v, All: all}, nil
}

// SetPromotion writes the bridge's own value (never "all").
func (b *Bridge) SetPromotion(value string) error {
	path := promotePath(b.Name)
	if err := os.WriteFile(path, []byte(value+"\n"), 0); err != nil {
		return fmt.Errorf("set %s to %s: %w", path, value, err)
	}
	return nil
}

func readSysctl(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w (the bridge is gone, or IPv4 is off on it)", path, err)
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return strings.TrimSpace(string(data)), nil
}

// BootID names this boot of the kernel: a saved setting of an earlier
// boot describes a device that no longer exists.
func BootID() (string, error) {
	return readSysctl("/proc/sys/kernel/random/boot_id")
}
