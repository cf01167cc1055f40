// Package nft is a minimal nftables client: it speaks the netfilter netlink
// protocol for the few objects tapbridge-cni installs (netdev tables, base
// chains, rules of payload, cmp, meta, counter and verdict expressions), and
// reads them back.
//
// It is hand-encoded rather than built on a general nftables library
// because the plugin is exec'd once per pod operation: every package linked
// into the binary is code the kernel must fault in at each exec, and the
// general libraries (with the netlink and socket layers under them) made
// the plugin's peak RSS exceed the upstream bridge plugin's. What it
// supports is only what the plugin sends; anything else the kernel reports
// (another tool's expressions, a different register) decodes as Raw, so it
// compares unequal to what the plugin meant rather than being misread.
//
// # Protocol notes
//
// A change is one batch (NFNL_MSG_BATCH_BEGIN ... END): the kernel commits
// all of it or none. The kernel handles the whole batch inside sendmsg and
// reports every message it refused, so every reply is queued on the socket
// by the time sendmsg returns; Commit reads them without blocking, as
// nft(8) does. Only the last message asks for an acknowledgement: it shows
// that the kernel read the batch to its end.
//
// A Conn acts in the network namespace of the thread that dialled it, for
// its whole life: the socket is bound to that namespace, not to the thread.
package nft
