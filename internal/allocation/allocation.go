// Package allocation is tapbridge-ipam's store: one cluster-scoped
// IPAllocation object (conf/k8s/ipam-crd.yaml) per allocated address,
// named after its network and address, so that the API server's atomic
// create decides which of two racing nodes gets an address. It knows the
// object's shape, its name and labels, and the requests on it.
package allocation

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GVR is the IPAllocation resource.
var GVR = schema.GroupVersionResource{Group: "tapbridge.io", Version: "v1alpha1", Resource: "ipallocations"}

const (
	apiVersion = "tapbridge.io/v1alpha1"
	kind       = "IPAllocation"
	// NetworkLabel narrows lists to one network (its value is Key(network)).
	NetworkLabel = "tapbridge.io/network"
	// ClaimLabel holds the owning IPAMClaim's UID.
	ClaimLabel = "tapbridge.io/claim"
	// userPrefix + AttachmentKey marks each user attachment, so DEL finds
	// its allocations with one list and no cache.
	userPrefix = "user.tapbridge.io/"
)

// Claim names the IPAMClaim that owns an address.
type Claim struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
}

// Pod names a user's pod.
type Pod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid,omitempty"`
}

// User is one pod attachment using the address.
type User struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	Node        string `json:"node"`
	Pod         *Pod   `json:"pod,omitempty"`
}

// Spec is the object's spec; key names are the CRD's.
type Spec struct {
	Network string `json:"network"`
	Address string `json:"address"`
	Claim   *Claim `json:"claim,omitempty"`
	Users   []User `json:"users,omitempty"`
}

// Allocation is one IPAllocation as read or to be created.
type Allocation struct {
	Name            string
	UID             string
	ResourceVersion string
	Created         time.Time
	Spec            Spec
}

// Addr is the allocated address.
func (a *Allocation) Addr() netip.Addr {
	addr, _ := netip.ParseAddr(a.Spec.Address)
	return addr
}

// Has reports whether u's attachment is a user.
func (a *Allocation) Has(network string, u User) bool { return a.userIndex(network, u) >= 0 }

func (a *Allocation) userIndex(network string, u User) int {
	for i, x := range a.Spec.Users {
		if AttachmentKey(network, x.ContainerID, x.IfName) == AttachmentKey(network, u.ContainerID, u.IfName) {
			return i
		}
	}
	return -1
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// Key is the network as it appears in names and labels: the network name
// itself when it is a DNS label, else "net-" and a digest of it.
func Key(network string) string {
	if dnsLabel.MatchString(network) {
		return network
	}
	sum := sha256.Sum256([]byte(network))
	return "net-" + hex.EncodeToString(sum[:12])
}

// Name is the object name of address a on network: "<key>.<address>"
// with '.' and ':' as '-' (vmnet13.172-16-13-10, v6net.2001-db8--10).
func Name(network string, a netip.Addr) string {
	return Key(network) + "." + strings.NewReplacer(".", "-", ":", "-").Replace(a.Unmap().String())
}

// AddrOfName is the address an object name of network stands for.
func AddrOfName(network, name string) (netip.Addr, bool) {
	rest, ok := strings.CutPrefix(name, Key(network)+".")
	if !ok {
		return netip.Addr{}, false
	}
	if a, err := netip.ParseAddr(strings.ReplaceAll(rest, "-", ".")); err == nil && a.Is4() {
		return a, true
	}
	a, err := netip.ParseAddr(strings.ReplaceAll(rest, "-", ":"))
	return a, err == nil
}

// AttachmentKey identifies (network, containerID, ifname) in a label key.
func AttachmentKey(network, containerID, ifName string) string {
	sum := sha256.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifName))
	return hex.EncodeToString(sum[:16])
}

func userLabel(network string, u User) string {
	return userPrefix + AttachmentKey(network, u.ContainerID, u.IfName)
}

func (a *Allocation) labels() map[string]string {
	l := map[string]string{NetworkLabel: Key(a.Spec.Network)}
	if a.Spec.Claim != nil {
		l[ClaimLabel] = a.Spec.Claim.UID
	}
	for _, u := range a.Spec.Users {
		l[userLabel(a.Spec.Network, u)] = ""
	}
	return l
}

func (a *Allocation) String() string {
	owner := "attachment"
	if a.Spec.Claim != nil {
		owner = fmt.Sprintf("IPAMClaim %s/%s", a.Spec.Claim.Namespace, a.Spec.Claim.Name)
	}
	return fmt.Sprintf("%s (%s of %s)", a.Name, a.Spec.Address, owner)
}
