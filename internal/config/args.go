package config

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// cniArgs lists the CNI_ARGS keys we know. The K8S_* keys are what kubelet
// and Multus send, so they are accepted even without IgnoreUnknown=1.
type cniArgs struct {
	types.CommonArgs
	MAC                        types.UnmarshallableString
	IP                         types.UnmarshallableString
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // the runtime's spelling
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive
	K8S_POD_UID                types.UnmarshallableString //nolint:revive
}

func loadCNIArgs(s string) (*cniArgs, error) {
	a := &cniArgs{}
	if err := types.LoadArgs(s, a); err != nil {
		return nil, &FieldError{Field: "CNI_ARGS", Msg: err.Error(), Kind: ErrArgs}
	}
	return a, nil
}

// parseCNIArgs reads CNI_ARGS once, for the guest MAC, the pod and the
// requested IPs.
func parseCNIArgs(raw *Raw, env Env, n *Net) error {
	a, err := loadCNIArgs(env.Args)
	if err != nil {
		return err
	}
	if err := parseMAC(raw, a, n); err != nil {
		return err
	}
	n.Pod = Pod{Namespace: string(a.K8S_POD_NAMESPACE), Name: string(a.K8S_POD_NAME)}
	return checkIPs(raw, a)
}

// parseMAC applies the conventions' precedence: runtimeConfig.mac (the
// "mac" capability) > args.cni.mac > CNI_ARGS MAC= > the config's "mac".
func parseMAC(raw *Raw, a *cniArgs, n *Net) error {
	candidates := []struct{ field, value string }{
		{"runtimeConfig.mac", raw.RuntimeConfig.MAC},
		{"args.cni.mac", raw.Args.CNI.MAC},
		{"CNI_ARGS MAC", string(a.MAC)},
		{"mac", raw.MAC},
	}
	for _, c := range candidates {
		if c.value == "" {
			continue
		}
		mac, err := ParseGuestMAC(c.value)
		if err != nil {
			if c.field == "CNI_ARGS MAC" {
				return &FieldError{Field: c.field, Msg: err.Error(), Kind: ErrArgs}
			}
			return invalid(c.field, "%v", err)
		}
		n.MAC = mac
		return nil
	}
	return nil
}

// ParseGuestMAC accepts a unicast 48-bit MAC: a multicast source MAC would
// be dropped by every switch on the L2.
func ParseGuestMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, err
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("%s is not a 48-bit Ethernet address", s)
	}
	if mac[0]&1 == 1 {
		return nil, fmt.Errorf("%s is a multicast address", s)
	}
	if isZero(mac) {
		return nil, fmt.Errorf("%s is all zeroes", s)
	}
	return mac, nil
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// checkIPs checks the requested IPs early; IPAM reads them itself from the
// same document and environment.
func checkIPs(raw *Raw, a *cniArgs) error {
	lists := map[string][]string{"runtimeConfig.ips": raw.RuntimeConfig.IPs, "args.cni.ips": raw.Args.CNI.IPs}
	for field, ips := range lists {
		for _, s := range ips {
			if !validIPOrPrefix(s) {
				return invalid(field, "%q is not an IP address or CIDR", s)
			}
		}
	}
	for _, s := range strings.Split(string(a.IP), ",") {
		if s != "" && !validIPOrPrefix(strings.TrimSpace(s)) {
			return &FieldError{Field: "CNI_ARGS IP", Msg: s + " is not an IP address", Kind: ErrArgs}
		}
	}
	return nil
}

func validIPOrPrefix(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	_, err := netip.ParsePrefix(s)
	return err == nil
}

// parseGC reads cni.dev/valid-attachments. A missing key stays nil so GC
// can tell "nothing is valid" from "the runtime sent no list".
func parseGC(raw *Raw, _ Env, n *Net) error {
	doc := raw.Attachments
	if len(doc) == 0 {
		doc = raw.OldAttachment
	}
	if len(doc) == 0 {
		return nil
	}
	var list []types.GCAttachment
	if err := json.Unmarshal(doc, &list); err != nil {
		return &FieldError{Field: "cni.dev/valid-attachments", Msg: err.Error(), Kind: ErrDecode}
	}
	n.GC = &GCList{Valid: make(map[types.GCAttachment]bool, len(list))}
	for i, a := range list {
		if a.ContainerID == "" || a.IfName == "" {
			return invalid("cni.dev/valid-attachments", "entry %d lacks containerID or ifname", i)
		}
		n.GC.Valid[a] = true
	}
	return nil
}
