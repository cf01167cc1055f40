package spoof

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Port describes one VM attachment: the host end of its veth, a port of
// the host bridge, and what the guest may send from.
type Port struct {
	Name string           // host end of the veth (a bridge port); names the table
	MAC  net.HardwareAddr // guest MAC
	IPs  []netip.Addr     // guest IPs (v4 and/or v6), may be empty

	// Intercept drops the guest's DHCPv4, DHCPv6 and router-solicitation
	// requests at the port: the node agent, which reads the port's frames
	// before this chain runs, answers them, and no other server on the L2
	// may see or answer them.
	Intercept bool
	// Open skips the source checks (spoofCheck off): only the intercept
	// rules remain, and everything else is accepted. It needs Intercept.
	Open bool
	// LearnLinkLocal gives the table a set of learned link-locals (see
	// Learn) that the chain treats as it treats the EUI-64 link-local: as
	// an allowed source, NA target and DAD target. It needs source checks.
	LearnLinkLocal bool
}

// Ensure installs the rules of one port, or replaces them. It is one
// transaction: the kernel applies all of it or nothing, so a crash never
// leaves a half-written chain, and a replaced chain is never seen empty by
// a packet. Kernels before 6.16 refuse a chain hooked on a device that does
// not exist (yet), so the caller creates the port's device first.
func Ensure(p Port) error {
	if err := p.validate(); err != nil {
		return fmt.Errorf("ensure anti-spoofing rules for port %s: %w", p.Name, err)
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("ensure anti-spoofing rules for port %s: open netlink: %w", p.Name, err)
	}
	if err := queueEnsure(c, p); err != nil {
		return fmt.Errorf("ensure anti-spoofing rules for port %s: %w", p.Name, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("ensure anti-spoofing rules for port %s: commit: %w", p.Name, err)
	}
	return nil
}

// queueEnsure batches the port's table, set, chain and rules. None of
// the messages is exclusive: the table, set and chain are created if
// missing and kept if present (a kept set keeps its elements: what the
// agent learned stays learned), and the flush makes the rules exactly
// these without listing what was there.
func queueEnsure(c *nftables.Conn, p Port) error {
	t := c.AddTable(tableOf(p.Name))
	var setID uint32
	if p.LearnLinkLocal {
		set := learnedOf(t)
		if err := c.AddSet(set, nil); err != nil {
			return fmt.Errorf("set %s: %w", learnedSet, err)
		}
		setID = set.ID
	}
	chain := c.AddChain(chainOf(t, p.Name))
	c.FlushChain(chain)
	for _, exprs := range portRules(p) {
		c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: bindSet(exprs, setID)})
	}
	return nil
}

// bindSet gives the lookups of the learned set the ID the set has in this
// batch, so a set created by the same transaction is found, as nft does.
func bindSet(exprs []expr.Any, id uint32) []expr.Any {
	for _, e := range exprs {
		if l, ok := e.(*expr.Lookup); ok && l.SetName == learnedSet {
			l.SetID = id
		}
	}
	return exprs
}

// Delete removes one port's rules; nil if they are already absent.
func Delete(port string) error {
	finish, err := BeginDelete(port)
	finish()
	return err
}

// BeginDelete commits the removal of one port's table and returns finish,
// which closes the netlink socket. Closing waits for the kernel to free the
// deleted objects, an RCU grace period; a caller that has other slow kernel
// work to do, such as deleting the port's links, does it before finish so
// the two waits overlap. finish is never nil.
func BeginDelete(port string) (finish func(), err error) {
	finish = func() {}
	if err := checkIfName("port", port); err != nil {
		return finish, fmt.Errorf("delete anti-spoofing rules for port %s: %w", port, err)
	}
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return finish, fmt.Errorf("delete anti-spoofing rules for port %s: open netlink: %w", port, err)
	}
	finish = func() { _ = c.CloseLasting() }
	t := tableOf(port)
	// A transaction that fails (deleting an absent table: ENOENT) makes the
	// kernel wait for an RCU grace period right in sendmsg as it aborts, so
	// look first: one GETTABLE, no transaction.
	if _, err := c.ListTableOfFamily(t.Name, t.Family); errors.Is(err, unix.ENOENT) {
		return finish, nil
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return finish, fmt.Errorf("delete anti-spoofing rules for port %s: commit: %w", port, err)
	}
	return finish, nil
}

// validate rejects ports whose rules would be meaningless.
func (p Port) validate() error {
	if err := checkIfName("port", p.Name); err != nil {
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
	if p.Open && !p.Intercept {
		return errors.New("a port without source checks needs no table unless it intercepts requests")
	}
	if p.Open && p.LearnLinkLocal {
		return errors.New("a port without source checks has nothing to learn: every link-local passes it")
	}
	return nil
}

// checkIfName applies the kernel's rules for interface names: the name is
// the device the chain hooks on.
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

func checkIP(ip netip.Addr) error {
	if !ip.IsValid() {
		return fmt.Errorf("guest IP %q is not an IP address", ip.String())
	}
	if ip.IsUnspecified() || ip.IsMulticast() {
		return fmt.Errorf("guest IP %s cannot be a source address", ip)
	}
	return nil
}
