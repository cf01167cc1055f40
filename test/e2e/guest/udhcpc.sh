#!/bin/sh
# The guest's udhcpc script (tb.dhcp=1): busybox udhcpc runs it with the
# event in $1 and the lease in the environment. It applies the address,
# the router and the MTU, and prints on the console what it got and from
# whom, as TBDHCP4 lines (see doc.go). /run/tb-dhcp4 tells /init a lease
# is there.
say() { echo "$*" >/dev/console; }

case "$1" in
deconfig)
	# At start and when a lease is lost: an address that vanished
	# here is what the tests look for.
	if ip -4 addr show dev eth0 | grep -q inet; then
		say "TBDHCP4 deconfig: address removed"
	fi
	ip -4 addr flush dev eth0
	;;
bound | renew)
	if ! ip -4 addr show dev eth0 | grep -q " $ip/$mask "; then
		ip -4 addr flush dev eth0
		ip addr add "$ip/$mask" dev eth0 || say "TBERROR dhcp4 address $ip/$mask"
	fi
	[ -n "$mtu" ] && ip link set eth0 mtu "$mtu"
	[ -n "$router" ] && ip route replace default via "${router%% *}" dev eth0
	say "TBDHCP4 $1 ip=$ip/$mask server=$serverid router=$router mtu=$mtu lease=$lease"
	echo "$ip/$mask" >/run/tb-dhcp4
	;;
nak)
	say "TBDHCP4 nak $message"
	;;
esac
exit 0
