package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Server is the API server's URL as the nodes see it.
func Server() string { return fmt.Sprintf("https://%s:%d", APIAddr, Port) }

const kubeconfigTmpl = `apiVersion: v1
kind: Config
clusters:
- name: tier
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
%s
contexts:
- name: tier
  context: {cluster: tier, user: %s}
current-context: tier
`

func (c *Cluster) writeKubeconfig(name, userYAML string) (string, error) {
	path := filepath.Join(c.Dir, name+".kubeconfig")
	b := fmt.Sprintf(kubeconfigTmpl, Server(), b64(c.PKI.caPEM), name, userYAML, name)
	return path, os.WriteFile(path, []byte(b), 0o600)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func (c *Cluster) writeAdminKubeconfig() (string, error) {
	user := fmt.Sprintf("    client-certificate-data: %s\n    client-key-data: %s", b64(c.PKI.adminCertPEM), b64(c.PKI.adminKeyPEM))
	return c.writeKubeconfig("admin", user)
}

// TokenKubeconfig writes a kubeconfig that authenticates with a token
// file, as the DaemonSet's installer writes one for the node.
func (c *Cluster) TokenKubeconfig(name, token string) (string, error) {
	tokenFile := filepath.Join(c.Dir, name+".token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		return "", err
	}
	return c.writeKubeconfig(name, "    tokenFile: "+tokenFile)
}

// ServiceAccountToken asks the API server for a token of the service
// account, bound to nothing but time: what kubelet's projected volume gets.
func (c *Cluster) ServiceAccountToken(ctx context.Context, namespace, name string) (string, error) {
	cs, err := c.Clientset()
	if err != nil {
		return "", err
	}
	ttl := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &ttl}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// AdminConfig is a client config for the test process: admin rights,
// sockets opened in the API netns, no client-side throttling.
func (c *Cluster) AdminConfig() *rest.Config {
	return &rest.Config{
		Host: Server(),
		TLSClientConfig: rest.TLSClientConfig{
			CAData: c.PKI.caPEM, CertData: c.PKI.adminCertPEM, KeyData: c.PKI.adminKeyPEM,
		},
		Dial: c.Dial,
		QPS:  -1,
	}
}

// Clientset is a typed admin client.
func (c *Cluster) Clientset() (*kubernetes.Clientset, error) {
	return kubernetes.NewForConfig(c.AdminConfig())
}

func (c *Cluster) adminHTTP() (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.PKI.caPEM) {
		return nil, fmt.Errorf("bad CA PEM")
	}
	cert, err := tls.X509KeyPair(c.PKI.adminCertPEM, c.PKI.adminKeyPEM)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext:     c.Dial,
			TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
		},
	}, nil
}
