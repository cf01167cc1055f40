#!/bin/sh
# The guest's dhclient script (tb.dhcp6=1): dhclient -6 runs it with
# $reason and the lease in the environment. It applies the IA_NA address
# (a /128, as DHCPv6 gives no prefix length: the on-link prefix comes from
# the router advertisement) and prints on the console what it got and
# from whom, as TBDHCP6 lines (see doc.go). /run/tb-dhcp6 tells /init a
# lease is there.
say() { echo "$*" >/dev/console; }

case "$reason" in
BOUND6 | RENEW6 | REBIND6 | REBOOT6)
	if [ -n "$old_ip6_address" ] && [ "$old_ip6_address" != "$new_ip6_address" ]; then
		ip -6 addr del "$old_ip6_address/$old_ip6_prefixlen" dev eth0
	fi
	if ! ip -6 addr show dev eth0 | grep -q " $new_ip6_address/"; then
		ip -6 addr add "$new_ip6_address/$new_ip6_prefixlen" dev eth0 || say "TBERROR dhcp6 address $new_ip6_address"
	fi
	say "TBDHCP6 $reason ip6=$new_ip6_address/$new_ip6_prefixlen server=$new_dhcp6_server_id renew=$new_renew rebind=$new_rebind life=$new_max_life dns=$new_dhcp6_name_servers"
	echo "$new_ip6_address/$new_ip6_prefixlen" >/run/tb-dhcp6
	;;
EXPIRE6 | RELEASE6 | STOP6)
	say "TBDHCP6 $reason: address $old_ip6_address removed"
	[ -n "$old_ip6_address" ] && ip -6 addr del "$old_ip6_address/$old_ip6_prefixlen" dev eth0
	;;
esac
exit 0
