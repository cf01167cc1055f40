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
	# No DAD: the address must be usable as soon as TBREADY is printed.
	[ -n "$TB_ip6" ] && echo 0 >/proc/sys/net/ipv6/conf/eth0/accept_dad
	ip link set eth0 up || say "TBERROR eth0 up"
	[ -n "$TB_ip" ] && { ip addr add "$TB_ip" dev eth0 || say "TBERROR ip $TB_ip"; }
	[ -n "$TB_ip6" ] && { ip -6 addr add "$TB_ip6" dev eth0 || say "TBERROR ip6 $TB_ip6"; }
	[ -n "$TB_gw" ] && { ip route add default via "$TB_gw" || say "TBERROR gw $TB_gw"; }
	[ -n "$TB_gw6" ] && { ip -6 route add default via "$TB_gw6" || say "TBERROR gw6 $TB_gw6"; }
}

start_responders() {
	nc -ll -p "$PORT" -e cat &
	echo "tapbridge-guest $(hostname) $TB_ip" >/www/index.html
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
say "TBREADY ip=$TB_ip ip6=$TB_ip6 mac=$(cat /sys/class/net/eth0/address) queues=$queues"

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
