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

mkdir -p /host/opt/cni/bin
install_file /tapbridge-cni /host/opt/cni/bin/tapbridge-cni 0755
echo "installed $(/host/opt/cni/bin/tapbridge-cni --version) in /opt/cni/bin"

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
