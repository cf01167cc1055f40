// Package kubeapi is how tapbridge-ipam reaches the Kubernetes API: a
// dynamic client built from a kubeconfig with every request bounded, and
// the classification of what went wrong (unreachable or slow, refused by
// RBAC) so the caller can give the runtime the right CNI code.
package kubeapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ErrUnavailable: the API server did not answer in time, could not be
// reached, or said to come back later (CNI code 11).
var ErrUnavailable = errors.New("kubernetes API unavailable")

// ErrForbidden: the API server refused the credentials or RBAC refused
// the request.
var ErrForbidden = errors.New("refused by the kubernetes API")

// Client is what the IPAM needs: the dynamic client for typed-by-hand
// objects, and the discovery answers STATUS asks for.
type Client struct {
	Dynamic  dynamic.Interface
	Metadata metadata.Interface // lists and gets of names, labels and annotations only
	REST     *rest.Config
}

// New loads kubeconfig and makes a client whose every request, connect
// included, gives up after timeout.
func New(kubeconfig string, timeout time.Duration) (*Client, error) {
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.Timeout = timeout
	cfg.Dial = (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext
	// One exec makes a handful of requests: client-side throttling would
	// only add latency, and the API server's priority and fairness still
	// protects it.
	cfg.QPS, cfg.Burst = -1, 0
	cfg.UserAgent = "tapbridge-ipam"
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", cfg.Host, err)
	}
	md, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", cfg.Host, err)
	}
	return &Client{Dynamic: dyn, Metadata: md, REST: cfg}, nil
}

// Classify wraps err with ErrUnavailable or ErrForbidden when it is one
// of those, keeping the API's own message.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w: %w", ErrForbidden, err)
	case apierrors.IsUnauthorized(err):
		// A token the API no longer takes (rotated, or its pod replaced
		// in a rolling update) is fixed by the DaemonSet's next refresh:
		// try again later, unlike an RBAC refusal.
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case unavailable(err):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	if apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsUnexpectedServerError(err) {
		return true
	}
	var netErr net.Error
	var urlErr *url.Error
	var opErr *net.OpError
	return errors.As(err, &netErr) || errors.As(err, &urlErr) || errors.As(err, &opErr)
}
