package spoof

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Port describes one VM attachment on a host bridge.
type Port struct {
	Bridge string           // host bridge name
	Name   string           // host-side port (veth) name = chain name
	MAC    net.HardwareAddr // guest MAC
	IPs    []net.IP         // guest IPs (v4 and/or v6), may be empty
}

// Ensure installs (or replaces) the rules of one port, creating the table,
// base chain and map if missing. It is idempotent.
func Ensure(p Port) error {
	if err := p.validate(); err != nil {
		return fmt.Errorf("ensure anti-spoofing rules for port %s: %w", p.Name, err)
	}
	// Re-declaring intact shared objects is harmless but not free: it
	// replaces the dispatch rule, and the kernel then makes closing the
	// netlink socket wait an RCU grace period (~10 ms) to free the old one.
	// So they are only (re)written when a cheap check finds them wanting.
	withSkeleton := verifySkeletonNow(p.Bridge) != nil
	err := commit(func(c *nftables.Conn) error { return queueEnsure(c, p, withSkeleton) })
	if !withSkeleton && errors.Is(err, unix.ENOENT) {
		// The table went away since the check (a caller without the lock).
		err = commit(func(c *nftables.Conn) error { return queueEnsure(c, p, true) })
	}
	if err != nil {
		return fmt.Errorf("ensure anti-spoofing rules for port %s: %w", p.Name, err)
	}
	return nil
}

// queueEnsure batches everything Ensure changes into one transaction: the
// kernel applies all of it or nothing, so a crash never leaves a port with a
// half-written chain, and a replaced chain is never seen empty by a packet.
func queueEnsure(c *nftables.Conn, p Port, withSkeleton bool) error {
	t := tableOf(p.Bridge)
	set := portMapOf(t)
	if withSkeleton {
		c.AddTable(t)
		if err := queueSkeleton(c, t, set); err != nil {
			return err
		}
	}
	chain := c.AddChain(portChainOf(t, p.Name))
	c.FlushChain(chain)
	for _, exprs := range portRules(p) {
		c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: exprs})
	}
	// The element must follow the chain: a jump needs an existing target.
	if err := c.SetAddElements(set, []nftables.SetElement{portElement(p.Name)}); err != nil {
		return fmt.Errorf("add map element %s: %w", p.Name, err)
	}
	return nil
}

// Delete removes one port's map element and chain. It returns nil if they
// are already absent, also if the whole table is.
func Delete(bridge, name string) error {
	finish, err := BeginDelete(bridge, name)
	finish()
	return err
}

// BeginDelete commits the removal of one port's rules and returns finish,
// which closes the netlink socket. Closing waits for the kernel to free the
// deleted objects, an RCU grace period (~15 ms here); a caller that has
// other slow kernel work to do, such as deleting the port's links, does it
// before finish so the two waits overlap. finish is never nil.
func BeginDelete(bridge, name string) (finish func(), err error) {
	finish = func() {}
	if err := validateNames(bridge, name); err != nil {
		return finish, fmt.Errorf("delete anti-spoofing rules for port %s: %w", name, err)
	}
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return finish, fmt.Errorf("delete anti-spoofing rules for port %s: open netlink: %w", name, err)
	}
	finish = func() { _ = c.CloseLasting() }
	if err := deletePort(c, bridge, name); err != nil && !errors.Is(err, unix.ENOENT) {
		return finish, fmt.Errorf("delete anti-spoofing rules for port %s: %w", name, err)
	}
	return finish, nil
}

// deletePort: nftables rejects a whole transaction with ENOENT when one
// object in it is missing. The common case (both present) costs one
// transaction; only when something is missing do we retry without the
// element. The element cannot outlive the chain (its jump holds a reference
// to the chain), so a chain-only delete failing with ENOENT means both are
// gone.
func deletePort(c *nftables.Conn, bridge, name string) error {
	err := flush(c, func(c *nftables.Conn) error { return queueDelete(c, bridge, name, true) })
	if errors.Is(err, unix.ENOENT) {
		err = flush(c, func(c *nftables.Conn) error { return queueDelete(c, bridge, name, false) })
	}
	return err
}

// queueDelete removes the port's chain, and first its element if withElem.
func queueDelete(c *nftables.Conn, bridge, name string, withElem bool) error {
	t := tableOf(bridge)
	if withElem {
		key := []nftables.SetElement{{Key: ifnameKey(name)}}
		if err := c.SetDeleteElements(portMapOf(t), key); err != nil {
			return fmt.Errorf("delete map element %s: %w", name, err)
		}
	}
	c.DelChain(portChainOf(t, name))
	return nil
}

// DeleteTable removes the bridge's table; nil if absent. The caller calls it,
// under its per-bridge lock, once the bridge has no tapbridge ports left.
func DeleteTable(bridge string) error {
	if err := checkIfName("bridge", bridge); err != nil {
		return fmt.Errorf("delete anti-spoofing table for bridge %s: %w", bridge, err)
	}
	err := commit(func(c *nftables.Conn) error {
		c.DelTable(tableOf(bridge))
		return nil
	})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete anti-spoofing table for bridge %s: %w", bridge, err)
	}
	return nil
}

// commit sends the messages queue adds as one transaction, over a netlink
// socket opened in the calling thread's network namespace and closed again.
//
// Closing costs about one RCU grace period after a commit that freed kernel
// objects (on release of an nfnetlink socket the kernel waits for nftables'
// deferred destruction work); it is independent of the number of ports.
func commit(queue func(*nftables.Conn) error) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	return flush(c, queue)
}

// flush queues messages on c and sends them as one transaction.
func flush(c *nftables.Conn, queue func(*nftables.Conn) error) error {
	if err := queue(c); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// validate rejects ports whose rules would be meaningless or would collide
// with the shared objects of the table.
func (p Port) validate() error {
	if err := validateNames(p.Bridge, p.Name); err != nil {
		return err
	}
	if err := checkMAC(p.MAC); err != nil {
		return err
	}
	for _, ip := range p.IPs {
		if err := checkIP(ip); err != nil {
			return err
		}
	}
	return nil
}

func validateNames(bridge, port string) error {
	if err := checkIfName("bridge", bridge); err != nil {
		return err
	}
	if err := checkIfName("port", port); err != nil {
		return err
	}
	if port == baseChainName {
		// The port chain would be the base chain itself.
		return fmt.Errorf("port name %q is reserved", port)
	}
	return nil
}

// checkIfName applies the kernel's rules for interface names, since the names
// become map keys matched against iifname and must fit IFNAMSIZ.
func checkIfName(what, name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("invalid %s name %q", what, name)
	case len(name) >= unix.IFNAMSIZ:
		return fmt.Errorf("%s name %q is longer than %d bytes", what, name, unix.IFNAMSIZ-1)
	case strings.ContainsAny(name, "/: \t\n\r\x00"):
		return fmt.Errorf("%s name %q has a character not allowed in interface names", what, name)
	}
	return nil
}

func checkMAC(mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("guest MAC %q is not a 48-bit Ethernet address", mac.String())
	}
	if mac[0]&1 != 0 {
		return fmt.Errorf("guest MAC %s is a multicast address", mac)
	}
	if string(mac) == string(make([]byte, 6)) {
		return fmt.Errorf("guest MAC %s is all zeros", mac)
	}
	return nil
}

func checkIP(ip net.IP) error {
	if ip.To16() == nil {
		return fmt.Errorf("guest IP %q is not an IP address", ip.String())
	}
	if ip.IsUnspecified() || ip.IsMulticast() {
		return fmt.Errorf("guest IP %s cannot be a source address", ip)
	}
	return nil
}
