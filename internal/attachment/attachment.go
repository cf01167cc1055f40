// Package attachment derives everything that names one (containerID,
// ifname) attachment on a node: the host-side veth, the TAP, the guest MAC
// and the link group. The names are a pure function of the pair, so DEL and
// GC find every piece without a cache or a prevResult.
package attachment

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net"
	"strings"
)

// ID is what the runtime uses to name an attachment.
type ID struct {
	ContainerID string
	IfName      string
}

// Names are the kernel-visible names of one attachment; all at most 15
// bytes (IFNAMSIZ-1).
type Names struct {
	Key     string // state key; also the host veth name, "tb" + 13 hex
	HostIf  string // host end of the veth, a port of the bridge
	HostMAC net.HardwareAddr
	PodIf   string // pod end of the veth: CNI_IFNAME, carries the guest MAC
	Tap     string // the VM's TAP in the pod netns
	Group   uint32 // link group of PodIf and Tap: DEL removes both in one batch
	GuestID ID
}

// For derives the names of an attachment.
func For(id ID) Names {
	sum := digest(id)
	hexsum := hex.EncodeToString(sum[:])
	key := "tb" + hexsum[:13]
	return Names{
		Key:     key,
		HostIf:  key,
		HostMAC: hostMAC(sum),
		PodIf:   id.IfName,
		Tap:     TapName(id.IfName, hexsum),
		Group:   group(sum),
		GuestID: id,
	}
}

// FromKey is what the key alone says of an attachment, for one whose
// record cannot be read: the host end's name. Its MACs, TAP and link group
// derive from (containerID, ifname), which the key does not reveal.
func FromKey(key string) Names {
	return Names{Key: key, HostIf: key}
}

// IsKeyOf reports whether key is the key of id: a record's salvaged
// containerID and ifname are trusted only if they hash to its name.
func IsKeyOf(key string, id ID) bool {
	return id.ContainerID != "" && id.IfName != "" && For(id).Key == key
}

// IsHostMAC reports whether mac can be the host end's MAC: HostMAC, or,
// when only the key is known, the form every host end's MAC has.
func (n Names) IsHostMAC(mac net.HardwareAddr) bool {
	if n.HostMAC != nil {
		return bytes.Equal(mac, n.HostMAC)
	}
	return len(mac) == 6 && mac[0] == 0xfe
}

// TapName follows KubeVirt's tap binding: Multus is asked for "pod<hash>"
// and libvirt opens "tap<hash>". Any other ifname gets "tap" + 12 hex of
// the attachment digest, which is deterministic and fits 15 bytes.
func TapName(ifname, hexsum string) string {
	if rest, ok := strings.CutPrefix(ifname, "pod"); ok && rest != "" {
		return "tap" + rest
	}
	return "tap" + hexsum[:12]
}

// GuestMAC derives a stable, locally administered unicast MAC, so a VM
// keeps its MAC across a plugin restart without any stored state.
func GuestMAC(id ID) net.HardwareAddr {
	sum := digest(id)
	mac := net.HardwareAddr(append([]byte(nil), sum[16:22]...))
	mac[0] = mac[0]&0xfc | 0x02
	return mac
}

// TapMAC is the TAP's own address, by libvirt's rule: the guest MAC with
// first byte 0xFE (0xFA when the guest's already starts with 0xFE), so it
// always differs from the guest's.
func TapMAC(guest net.HardwareAddr) net.HardwareAddr {
	mac := append(net.HardwareAddr(nil), guest...)
	mac[0] = 0xfe
	if guest[0] == 0xfe {
		mac[0] = 0xfa
	}
	return mac
}

// hostMAC starts with 0xFE, like libvirt's TAPs, for the same reason: a
// bridge without a MAC set by its admin takes the lowest MAC among its
// ports, and a port with a low MAC would change the node's MAC on the L2.
func hostMAC(sum [sha256.Size]byte) net.HardwareAddr {
	mac := net.HardwareAddr(append([]byte(nil), sum[22:28]...))
	mac[0] = 0xfe
	return mac
}

func digest(id ID) [sha256.Size]byte {
	// The NUL separator keeps ("ab","c") and ("a","bc") apart.
	return sha256.Sum256([]byte(id.ContainerID + "\x00" + id.IfName))
}

// group is never 0 (the default group every link starts in).
func group(sum [sha256.Size]byte) uint32 {
	g := binary.BigEndian.Uint32(sum[24:28])
	if g == 0 {
		g = 1
	}
	return g
}
