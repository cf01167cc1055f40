package kube_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// What multus-dynamic-networks-controller (github.com/k8snetworkplumbingwg/
// multus-dynamic-networks-controller, commit 7b7d8941, the controller that
// KubeVirt's interface hot-plug relies on) does when a pod's
// k8s.v1.cni.cncf.io/networks annotation changes, step for step, with its
// requests sent to the real Multus thick daemon. The controller itself is
// not run: it finds a pod's netns and sandbox ID through the node's CRI
// socket (pkg/cri: ListPodSandbox by the pod's UID, then the netns of
// PodSandboxStatus' verbose info), so it needs a containerd or CRI-O that
// ran the pod's sandbox, and the pods here are API objects whose netns the
// test made.
//
// The steps (pkg/controller/pod.go, processNextWorkItem):
//   - attachments to add: the elements of the annotation (namespace
//     defaulted to the pod's) whose key namespace/name/interface is not a
//     key name/interface of a non-default network-status entry
//     (newAttachments, annotations.NetworkSelectionElementIndexKey,
//     NetworkStatusIndexKey);
//   - for each, in order: the NAD's spec.config with its name filled in when
//     missing (serializeNetAttachDefWithDefaults, nadutils.
//     GetCNIConfigFromSpec: a NAD without spec.config fails here), then
//     POST /delegate on the daemon's socket with
//     multusapi.CreateDelegateRequest("ADD", sandboxID, netns, interface,
//     pod namespace, name, UID, config, interfaceAttributes) (addNetworks,
//     multuscni.HTTPClient), interfaceAttributes carrying the element's mac
//     (and ips, cni-args) only when one is set;
//   - attachments to remove: each non-default network-status entry whose
//     key is not an element's, as {name, namespace, interface: the
//     entry's interface} (attachmentsToDelete), each a /delegate "DEL"
//     without interfaceAttributes (removeNetworks);
//   - network-status: the current entries, plus one per added attachment
//     made by nadutils.CreateNetworkStatus from the result (the last
//     interface with a sandbox, all IPs), minus the removed keys, written
//     with UpdateStatus (handleResult, annotations.UpdatePodNetworkStatus,
//     nadutils.SetNetworkStatus);
//   - after a failed request, a DEL of every attachment it tried to add,
//     the failed one included (handleRollback, which only logs their
//     errors: the tests read them in the calls); the controller then
//     retries the pod twice (maxRetries), which the tests do not.

// delegateRequest is multusapi.Request (pkg/server/api/types.go of Multus
// v4.2.2): config is []byte there, so JSON carries it as base64.
type delegateRequest struct {
	Env                 map[string]string   `json:"env,omitempty"`
	Config              []byte              `json:"config,omitempty"`
	InterfaceAttributes *delegateIfaceAttrs `json:"interfaceAttributes,omitempty"`
}

// delegateIfaceAttrs is multusapi.DelegateInterfaceAttributes.
type delegateIfaceAttrs struct {
	IPRequest  []string        `json:"ips,omitempty"`
	MacRequest string          `json:"mac,omitempty"`
	CNIArgs    *map[string]any `json:"cni-args"`
}

// dynamicStatus is a network-status entry (nadv1.NetworkStatus), kept
// whole so entries the controller does not touch are written back as
// they were.
type dynamicStatus struct {
	Name      string          `json:"name"`
	Interface string          `json:"interface,omitempty"`
	IPs       []string        `json:"ips,omitempty"`
	Mac       string          `json:"mac,omitempty"`
	Mtu       int             `json:"mtu,omitempty"`
	Default   bool            `json:"default"`
	DNS       json.RawMessage `json:"dns,omitempty"`
	Gateway   []string        `json:"gateway,omitempty"`
	Device    json.RawMessage `json:"device-info,omitempty"`
}

// dynamicCall is one /delegate request the controller sent, and the
// daemon's error answer ("" for success).
type dynamicCall struct {
	Cmd, Network, IfName string
	Err                  string
}

// delegate sends the controller's /delegate request for element e of the
// pod to the node's daemon (ADD answers a result).
func (s *sandbox) delegate(cmd string, pod *corev1.Pod, e element, conf []byte) (*current.Result, error) {
	req := delegateRequest{Env: map[string]string{
		"CNI_COMMAND": cmd, "CNI_CONTAINERID": s.rt.ContainerID, "CNI_NETNS": s.rt.NetNS, "CNI_IFNAME": e.Interface,
		"CNI_ARGS": fmt.Sprintf("K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_UID=%s", pod.Namespace, pod.Name, pod.UID),
	}, Config: conf}
	if e.MAC != "" {
		req.InterfaceAttributes = &delegateIfaceAttrs{MacRequest: e.MAC}
	}
	out, err := s.n.daemon.post("/delegate", req)
	if err != nil || cmd != "ADD" {
		return nil, err
	}
	var resp struct{ Result *current.Result }
	if err := json.Unmarshal(out, &resp); err != nil || resp.Result == nil {
		return nil, fmt.Errorf("delegate ADD answered %s: %v", out, err)
	}
	return resp.Result, nil
}

// nadConfig is the config the controller sends for e: the NAD's
// spec.config, its name filled in when missing.
func nadConfig(t *testing.T, e element) ([]byte, error) {
	_, dyn := clients(t)
	u, err := dyn.Resource(nadGVR).Namespace(e.Namespace).Get(ctxT(t), e.Name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var c map[string]any
	spec, _ := u.Object["spec"].(map[string]any)
	conf, _ := spec["config"].(string)
	if err := json.Unmarshal([]byte(conf), &c); err != nil {
		return nil, fmt.Errorf("failed to unmarshal Spec.Config: %v", err)
	}
	if name, ok := c["name"]; !ok || name == "" {
		c["name"] = e.Name
		return json.Marshal(c)
	}
	return []byte(conf), nil
}

// reconcileDynamic does what the controller does for the sandbox's pod
// after its networks annotation changed, and returns the requests it sent;
// err is the first failed request's (after its rollback).
func (s *sandbox) reconcileDynamic(t *testing.T) (calls []dynamicCall, err error) {
	t.Helper()
	cs, _ := clients(t)
	pod, gerr := cs.CoreV1().Pods(s.pod.Namespace).Get(ctxT(t), s.pod.Name, metav1.GetOptions{})
	if gerr != nil {
		t.Fatal(gerr)
	}
	var elems []element
	if raw := pod.Annotations["k8s.v1.cni.cncf.io/networks"]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &elems); err != nil {
			t.Fatalf("networks annotation %q: %v", raw, err)
		}
	}
	var statuses []dynamicStatus
	if raw := pod.Annotations["k8s.v1.cni.cncf.io/network-status"]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &statuses); err != nil {
			t.Fatalf("network-status %q: %v", raw, err)
		}
	}
	elemKeys, statusKeys := map[string]bool{}, map[string]bool{}
	for i := range elems {
		if elems[i].Namespace == "" {
			elems[i].Namespace = pod.Namespace
		}
		elemKeys[elems[i].Namespace+"/"+elems[i].Name+"/"+elems[i].Interface] = true
	}
	for _, st := range statuses {
		if !st.Default {
			statusKeys[st.Name+"/"+st.Interface] = true
		}
	}
	send := func(cmd string, e element, conf []byte) (*current.Result, error) {
		res, err := s.delegate(cmd, pod, e, conf)
		c := dynamicCall{Cmd: cmd, Network: e.Namespace + "/" + e.Name, IfName: e.Interface}
		if err != nil {
			c.Err = err.Error()
		}
		calls = append(calls, c)
		return res, err
	}

	var (
		added   []dynamicStatus
		removed = map[string]bool{}
		tried   []element
	)
	for _, e := range elems {
		if statusKeys[e.Namespace+"/"+e.Name+"/"+e.Interface] {
			continue
		}
		tried = append(tried, e)
		conf, cerr := nadConfig(t, e)
		if cerr != nil {
			err = cerr
			break
		}
		res, aerr := send("ADD", e, conf)
		if aerr != nil {
			err = fmt.Errorf("failed to ADD delegate: %w", aerr)
			break
		}
		added = append(added, statusOf(e.Namespace+"/"+e.Name, res))
	}
	if err == nil {
		for _, st := range statuses {
			if st.Default || elemKeys[st.Name+"/"+st.Interface] {
				continue
			}
			ns, name, _ := strings.Cut(st.Name, "/")
			e := element{Name: name, Namespace: ns, Interface: st.Interface}
			conf, cerr := nadConfig(t, e)
			if cerr == nil {
				_, cerr = send("DEL", e, conf)
			}
			if cerr != nil {
				err = fmt.Errorf("failed to remove delegate: %w", cerr)
				break
			}
			removed[st.Name+"/"+st.Interface] = true
		}
	}
	if len(added) > 0 || len(removed) > 0 {
		var next []dynamicStatus
		for _, st := range append(statuses, added...) {
			if !removed[st.Name+"/"+st.Interface] {
				next = append(next, st)
			}
		}
		b, _ := json.Marshal(next)
		pod.Annotations["k8s.v1.cni.cncf.io/network-status"] = string(b)
		if _, uerr := cs.CoreV1().Pods(pod.Namespace).UpdateStatus(ctxT(t), pod, metav1.UpdateOptions{}); uerr != nil {
			t.Fatalf("network-status update: %v", uerr)
		}
	}
	if err != nil {
		for _, e := range tried {
			conf, cerr := nadConfig(t, e)
			if cerr != nil {
				calls = append(calls, dynamicCall{Cmd: "DEL", Network: e.Namespace + "/" + e.Name, IfName: e.Interface, Err: cerr.Error()})
				continue
			}
			_, _ = send("DEL", e, conf) // its answer is in calls
		}
	}
	return calls, err
}

// statusOf is nadutils.CreateNetworkStatus of a result: the last
// interface with a sandbox names the entry, and every IP is listed.
func statusOf(network string, res *current.Result) dynamicStatus {
	st := dynamicStatus{Name: network}
	for _, i := range res.Interfaces {
		if i.Sandbox != "" {
			st.Interface, st.Mac, st.Mtu = i.Name, i.Mac, i.Mtu
		}
	}
	for _, ip := range res.IPs {
		st.IPs = append(st.IPs, ip.Address.IP.String())
	}
	for _, r := range res.Routes {
		if r.Dst.IP == nil || r.Dst.IP.IsUnspecified() {
			st.Gateway = append(st.Gateway, r.GW.String())
		}
	}
	return st
}

// setNetworks changes the pod's networks annotation as KubeVirt's
// virt-controller does for a hot-plug (an element added) or an unplug
// (the element of the interface marked absent dropped).
func setNetworks(t *testing.T, s *sandbox, elems ...element) {
	t.Helper()
	cs, _ := clients(t)
	pod, err := cs.CoreV1().Pods(s.pod.Namespace).Get(ctxT(t), s.pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Annotations["k8s.v1.cni.cncf.io/networks"] = annotation(elems...)
	if _, err := cs.CoreV1().Pods(pod.Namespace).Update(ctxT(t), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("networks annotation: %v", err)
	}
}
