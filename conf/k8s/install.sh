#!/bin/sh
# Installs tapbridge-cni on the node (run by the init container of
# daemonset.yaml, with the host's /opt/cni/bin and /etc/cni/multus/net.d
# mounted under /host). Every file is written next to its target and then
# renamed over it, so kubelet never executes or reads a half-written file.
set -eu

install_file() { # src dst mode
	tmp="$(dirname "$2")/.$(basename "$2").tmp"
	cp "$1" "$tmp"
	chmod "$3" "$tmp"
	mv -f "$tmp" "$2"
}

sa=/var/run/secrets/kubernetes.io/serviceaccount
ipamdir=/host/etc/cni/net.d/tapbridge-ipam.d

# tapbridge-ipam reads its kubeconfig on the host, where the pod's token
# is not mounted: the token is copied next to it (and refreshed by the
# main container, "--refresh-token", as kubelet rotates it).
if [ "${1:-}" = "--refresh-token" ]; then
	while :; do
		install_file "$sa/token" "$ipamdir/token" 0600
		sleep 300
	done
fi

mkdir -p /host/opt/cni/bin
install_file /tapbridge-cni /host/opt/cni/bin/tapbridge-cni 0755
install_file /tapbridge-ipam /host/opt/cni/bin/tapbridge-ipam 0755
echo "installed $(/host/opt/cni/bin/tapbridge-cni --version) and $(/host/opt/cni/bin/tapbridge-ipam --version) in /opt/cni/bin"

mkdir -p "$ipamdir"
install_file "$sa/ca.crt" "$ipamdir/ca.crt" 0644
install_file "$sa/token" "$ipamdir/token" 0600
cat > "$ipamdir/.kubeconfig.tmp" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: cluster
  cluster:
    server: https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}
    certificate-authority: /etc/cni/net.d/tapbridge-ipam.d/ca.crt
users:
- name: tapbridge-cni
  user:
    tokenFile: /etc/cni/net.d/tapbridge-ipam.d/token
contexts:
- name: tapbridge
  context: {cluster: cluster, user: tapbridge-cni}
current-context: tapbridge
KUBECONFIG
mv -f "$ipamdir/.kubeconfig.tmp" "$ipamdir/kubeconfig"
echo "installed /etc/cni/net.d/tapbridge-ipam.d/kubeconfig"

# Per-node conflists (host-local with per-node ranges): the ConfigMap
# tapbridge-netconf holds "<node>.<network>.conflist" keys; this node's are
# installed as /etc/cni/multus/net.d/<network>.conflist, where Multus looks
# for the config of a NetworkAttachmentDefinition that has none.
if [ -d /netconf ]; then
	mkdir -p /host/etc/cni/multus/net.d
	for f in /netconf/"$NODE_NAME".*.conflist; do
		[ -e "$f" ] || continue
		name=${f##*/}
		name=${name#"$NODE_NAME".}
		install_file "$f" "/host/etc/cni/multus/net.d/$name" 0644
		echo "installed /etc/cni/multus/net.d/$name"
	done
fi
