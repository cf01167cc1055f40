// Package guest boots real Linux guests with QEMU on a TAP device that
// already exists in a pod network namespace, the way KubeVirt's libvirt
// does for <interface type='ethernet'><target dev='tap…' managed='no'/>:
// the CNI plugin has created the TAP (persistent, owned by uid/gid 107),
// and the unprivileged QEMU only attaches to it.
//
// The package has three parts:
//
//   - EnsureImage builds, once per cache directory, a kernel from Debian's
//     linux-image-cloud-amd64 package and a busybox initramfs whose /init
//     (init.sh) configures eth0 from the kernel command line or by DHCP
//     (udhcpc, and Debian's dhclient copied in with its libraries), runs probes
//     and prints machine-readable results on the serial console.
//   - OpenTap attaches to an existing TAP as its owner (TUNSETIFF as uid
//     107), so the kernel's owner check is exercised as in production.
//   - Boot starts QEMU (TCG) as uid/gid 107 on the fds from OpenTap and
//     returns a VM whose serial console can be waited on and parsed.
//
// Guest command line (all optional, appended through BootOptions.Cmdline):
//
//	tb.ip=10.99.0.2/24    IPv4 address of eth0
//	tb.ip6=2001:db8::2/64 IPv6 address of eth0 (no DAD)
//	tb.gw=, tb.gw6=       default routes
//	tb.dhcp=1             get the IPv4 address, router and MTU by DHCP
//	                      (busybox udhcpc, which stays up to renew)
//	tb.dhcp6=1            get the IPv6 address by DHCPv6 (Debian's dhclient
//	                      -6, which stays up to renew; the on-link prefix
//	                      comes from a router advertisement)
//	tb.mtu=               MTU of eth0
//	tb.name=              hostname, shown by the HTTP responder
//	tb.ping=ip1,ip2       ping each (ping -c 3 -W 2)
//	tb.tcp=ip:port,...    connect, send a token and expect it echoed back
//	tb.wait=secs          sleep before probing
//	tb.retry=secs         retry each failing probe for that long (default 30)
//	tb.hold=1             stay up after the probes instead of powering off
//	tb.watch=ip           after the probes, ping ip 10 times a second for good
//	tb.port=7777          port of the TCP echo responder
//
// Serial console lines the guest prints (see init.sh):
//
//	TBINIT                                      /init started
//	TBDHCP4 <event> ip=… server=… router=… mtu=… lease=…
//	                                            udhcpc's script ran (bound, renew;
//	                                            "deconfig: address removed" when a
//	                                            lease was lost; nak)
//	TBDHCP6 <reason> ip6=… server=<DUID> renew=… rebind=… life=… dns=…
//	                                            dhclient's script ran (BOUND6,
//	                                            RENEW6, REBIND6; EXPIRE6, RELEASE6,
//	                                            STOP6 when the address went)
//	TBRA on-link <prefix>                       a router advertisement made the
//	                                            DHCPv6 address's prefix on-link
//	TBREADY ip=… ip6=… mac=… queues=N from=<4>,<6>
//	                                            eth0 configured, responders listening;
//	                                            from: where each address came from
//	                                            (cmdline, dhcp4, dhcp6, none)
//	TBPROBE ping <ip> ok rtt=<avg ms> | fail
//	TBPROBE tcp <ip:port> ok | fail
//	TBDONE                                      all probes finished
//	TBWATCH <ip>                                continuous ping started (tb.watch);
//	                                            busybox prints its replies as they come
//	TBHOLD                                      staying up (tb.hold=1)
//	TBERROR <what>                              something in /init failed
//
// Responders (always started): a TCP echo server on tb.port (7777) and an
// HTTP server on port 80 serving "tapbridge-guest <name> <ip>".
package guest
