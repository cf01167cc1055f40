package kubeapi

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	podsGVR  = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	nodesGVR = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
)

// Pod is what the IPAM reads of a pod: who it is and its annotations.
type Pod struct {
	Namespace, Name, UID string
	Annotations          map[string]string
}

// GetPod reads a pod's metadata (the object's spec and status are not
// transferred).
func (c *Client) GetPod(ctx context.Context, namespace, name string) (*Pod, error) {
	m, err := c.Metadata.Resource(podsGVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return &Pod{Namespace: namespace, Name: name, UID: string(m.UID), Annotations: m.Annotations}, nil
}

// GetNode reads a node's metadata; NotFound says it is no longer part of
// the cluster.
func (c *Client) GetNode(ctx context.Context, name string) (*metav1.PartialObjectMetadata, error) {
	return c.Metadata.Resource(nodesGVR).Get(ctx, name, metav1.GetOptions{})
}
