#!/bin/sh
# /init of the tapbridge test guest, see package guest (doc.go) for the
# tb.* command line and the TB* lines printed on the serial console.
# Everything here is busybox; the console is ttyS0 (console=ttyS0).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

say() { echo "$*"; }
now() { date +%s; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
mkdir -p /dev/pts /tmp /run /www
# Keep kernel messages off the console so TB* lines arrive whole.
dmesg -n 1
say TBINIT

# tb.key=value on the kernel command line becomes $TB_key.
for kv in $(cat /proc/cmdline); do
	case "$kv" in
	tb.*=*)
		k=${kv%%=*}
		k=${k#tb.}
		case "$k" in *[!a-z0-9_]* | "") continue ;; esac
		eval "TB_$k=\${kv#*=}"
		;;
	esac
done
RETRY=${TB_retry:-30}
PORT=${TB_port:-7777}
[ -n "$TB_name" ] && hostname "$TB_name"

# Modules are listed in dependency order by the image builder.
for m in $(cat /etc/tb-modules); do
	insmod "/lib/modules/$m.ko" || say "TBERROR insmod $m"
done

i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do
	usleep 100000
	i=$((i + 1))
done
[ -e /sys/class/net/eth0 ] || say "TBERROR no eth0"

configure_net() {
	ip link set lo up
	[ -n "$TB_mtu" ] && ip link set eth0 mtu "$TB_mtu"
	# No DAD: the address must be usable as soon as TBREADY is printed,
	# and dhclient binds to the link-local address as soon as it starts.
	[ -n "$TB_ip6$TB_dhcp6" ] && echo 0 >/proc/sys/net/ipv6/conf/eth0/accept_dad
	ip link set eth0 up || say "TBERROR eth0 up"
	[ -n "$TB_ip" ] && { ip addr add "$TB_ip" dev eth0 || say "TBERROR ip $TB_ip"; }
	[ -n "$TB_ip6" ] && { ip -6 addr add "$TB_ip6" dev eth0 || say "TBERROR ip6 $TB_ip6"; }
	[ -n "$TB_gw" ] && { ip route add default via "$TB_gw" || say "TBERROR gw $TB_gw"; }
	[ -n "$TB_gw6" ] && { ip -6 route add default via "$TB_gw6" || say "TBERROR gw6 $TB_gw6"; }
	IP4=$TB_ip IP6=$TB_ip6 FROM4=cmdline FROM6=cmdline
	[ -z "$IP4" ] && FROM4=none
	[ -z "$IP6" ] && FROM6=none
	# Both clients start at once, so their exchanges overlap.
	[ "$TB_dhcp" = 1 ] && start_dhcp4
	[ "$TB_dhcp6" = 1 ] && start_dhcp6
	[ "$TB_dhcp" = 1 ] && IP4=$(wait_lease /run/tb-dhcp4 dhcp4 /tmp/udhcpc.log) && FROM4=dhcp4
	[ "$TB_dhcp6" = 1 ] && IP6=$(wait_lease /run/tb-dhcp6 dhcp6 /tmp/dhclient.log) && FROM6=dhcp6 && wait_ra
}

# udhcpc (busybox) stays in the foreground of its own background job, to
# renew and rebind for as long as the guest runs; its script applies the
# lease and prints TBDHCP4 lines.
start_dhcp4() {
	udhcpc -f -i eth0 -s /etc/tb/udhcpc.sh -T 2 -A 2 >/tmp/udhcpc.log 2>&1 &
}

# dhclient -6 (Debian's isc-dhcp-client) the same way, for IA_NA; its
# script prints TBDHCP6 lines.
start_dhcp6() {
	# dhclient binds to the link-local address, which comes a moment
	# after the link is up.
	end=$(($(now) + RETRY))
	until ip -6 addr show dev eth0 scope link | grep -q inet6; do
		[ "$(now)" -ge "$end" ] && { say "TBERROR dhcp6: no link-local address within ${RETRY}s"; break; }
		usleep 50000
	done
	mkdir -p /var/lib/dhcp /etc/dhcp
	echo "request dhcp6.name-servers, dhcp6.domain-search;" >/etc/dhcp/dhclient6.conf
	dhclient -6 -d -v -cf /etc/dhcp/dhclient6.conf -sf /etc/tb/dhclient.sh \
		-lf /var/lib/dhcp/dhclient6.leases -pf /run/dhclient6.pid eth0 >/tmp/dhclient.log 2>&1 &
}

# wait_lease <file> <what> <client log>: prints the address the client's
# script wrote to file, or says TBERROR (with the client's log) after
# $RETRY seconds.
wait_lease() {
	end=$(($(now) + RETRY))
	while [ ! -s "$1" ]; do
		if [ "$(now)" -ge "$end" ]; then
			say "TBERROR $2: no lease within ${RETRY}s" >/dev/console
			sed "s/^/TBLOG $2: /" "$3" >/dev/console
			return 1
		fi
		usleep 100000
	done
	cat "$1"
}

# wait_ra: the DHCPv6 address is a /128; the prefix is on-link by the
# router advertisement's prefix option (A=0: no SLAAC address from it).
wait_ra() {
	end=$(($(now) + RETRY))
	while :; do
		r=$(ip -6 route show dev eth0 | grep '^[0-9a-f:]*/' | grep -v '^fe80' | grep -v '/128 ' | head -n 1)
		[ -n "$r" ] && { say "TBRA on-link ${r%% *}"; return; }
		[ "$(now)" -ge "$end" ] && { say "TBERROR ra: no on-link prefix within ${RETRY}s"; return; }
		usleep 100000
	done
}

start_responders() {
	nc -ll -p "$PORT" -e cat &
	echo "tapbridge-guest $(hostname) $IP4" >/www/index.html
	httpd -p 80 -h /www
	i=0
	while ! netstat -ltn | grep -q ":$PORT "; do
		[ $i -ge 50 ] && { say "TBERROR echo responder not listening"; return; }
		usleep 100000
		i=$((i + 1))
	done
}

probe_ping() {
	end=$(($(now) + RETRY))
	while :; do
		if out=$(ping -c 3 -W 2 "$1" 2>&1); then
			rtt=$(echo "$out" | sed -n 's|.*min/avg/max = [^/]*/\([^/]*\)/.*|\1|p')
			say "TBPROBE ping $1 ok rtt=$rtt"
			return
		fi
		[ "$(now)" -ge "$end" ] && break
		sleep 1
	done
	say "TBPROBE ping $1 fail"
}

probe_tcp() {
	host=${1%:*}
	port=${1##*:}
	host=${host#[}
	host=${host%]}
	tok="tbecho-$port-$(now)-$$"
	end=$(($(now) + RETRY))
	while :; do
		out=$(echo "$tok" | timeout 10 nc -w 3 "$host" "$port" 2>/dev/null)
		if [ "$out" = "$tok" ]; then
			say "TBPROBE tcp $1 ok"
			return
		fi
		[ "$(now)" -ge "$end" ] && break
		sleep 1
	done
	say "TBPROBE tcp $1 fail"
}

configure_net
start_responders
queues=$(ls -d /sys/class/net/eth0/queues/rx-* 2>/dev/null | wc -l)
say "TBREADY ip=$IP4 ip6=$IP6 mac=$(cat /sys/class/net/eth0/address) queues=$queues from=$FROM4,$FROM6"

[ -n "$TB_wait" ] && sleep "$TB_wait"
for t in $(echo "$TB_ping" | tr , ' '); do probe_ping "$t"; done
for t in $(echo "$TB_tcp" | tr , ' '); do probe_tcp "$t"; done
say TBDONE

# A continuous ping (10 a second) to tb.watch, its replies on the console
# as busybox prints them ("64 bytes from <ip>: seq=N ..."), for as long as
# the guest runs: how a test watches an outage from inside a guest.
if [ -n "$TB_watch" ]; then
	say "TBWATCH $TB_watch"
	ping -i 0.1 "$TB_watch" &
fi

if [ "$TB_hold" = 1 ]; then
	say TBHOLD
	while :; do sleep 3600; done
fi
poweroff -f
