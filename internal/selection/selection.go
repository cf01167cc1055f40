// Package selection reads a pod's network-selection annotation
// (k8s.v1.cni.cncf.io/networks, the Multus convention) and finds the
// element of one network: its interface and its ipam-claim-reference.
package selection

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Annotation is the pod annotation that lists the pod's networks.
const Annotation = "k8s.v1.cni.cncf.io/networks"

// ErrMalformed: the annotation cannot be read.
var ErrMalformed = errors.New("malformed network-selection annotation")

// Element is one network of the pod.
type Element struct {
	Name      string   `json:"name"`
	Namespace string   `json:"namespace,omitempty"`
	Interface string   `json:"interface,omitempty"`
	IPs       []string `json:"ips,omitempty"`
	Claim     string   `json:"ipam-claim-reference,omitempty"`
}

// Parse reads the annotation's value: a JSON list of elements, or the
// short form "[namespace/]name[@interface]" separated by commas.
func Parse(value string) ([]Element, error) {
	value = strings.TrimSpace(value)
	if value == "" {
		return nil, nil
	}
	if strings.HasPrefix(value, "[") {
		var els []Element
		if err := json.Unmarshal([]byte(value), &els); err != nil {
			return nil, fmt.Errorf("%w %s: %v", ErrMalformed, Annotation, err)
		}
		for i, e := range els {
			if e.Name == "" {
				return nil, fmt.Errorf("%w %s: element %d has no name", ErrMalformed, Annotation, i)
			}
			if e.Claim != "" && len(e.IPs) > 0 {
				return nil, fmt.Errorf("%w %s: element %d (%s) has both ips and ipam-claim-reference", ErrMalformed, Annotation, i, e.Name)
			}
		}
		return els, nil
	}
	var els []Element
	for _, item := range strings.Split(value, ",") {
		e, err := parseShort(strings.TrimSpace(item))
		if err != nil {
			return nil, err
		}
		els = append(els, e)
	}
	return els, nil
}

func parseShort(s string) (Element, error) {
	var e Element
	rest, iface, _ := strings.Cut(s, "@")
	e.Interface = iface
	if ns, name, ok := strings.Cut(rest, "/"); ok {
		if ns == "" {
			return Element{}, fmt.Errorf("%w %s: %q has an empty namespace", ErrMalformed, Annotation, s)
		}
		e.Namespace, e.Name = ns, name
	} else {
		e.Name = rest
	}
	if e.Name == "" || strings.ContainsAny(e.Name, "/@ ") || (strings.Contains(s, "@") && iface == "") {
		return Element{}, fmt.Errorf("%w %s: %q is not [namespace/]name[@interface]", ErrMalformed, Annotation, s)
	}
	return e, nil
}

// Find is the element of network on interface ifName. Elements are
// matched by name only: the IPAM knows the CNI network's name, which is
// the NAD's name, and not the namespace the NAD came from. An element
// that names no interface matches any, when it is the network's only one.
func Find(els []Element, network, ifName string) (Element, bool) {
	var loose []Element
	for _, e := range els {
		if e.Name != network {
			continue
		}
		if e.Interface == ifName {
			return e, true
		}
		if e.Interface == "" {
			loose = append(loose, e)
		}
	}
	if len(loose) == 1 {
		return loose[0], true
	}
	return Element{}, false
}
