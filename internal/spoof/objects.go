package spoof

import (
	"github.com/google/nftables"
)

const (
	// tablePrefix + the port name is the port's own table.
	tablePrefix = "tapbridge-"
	// chainName is the table's only chain, hooked on the port's ingress.
	chainName = "guest"
	// learnedSet holds the link-local a learning port's guest claimed (see
	// Learn); the chain reads it like the EUI-64 link-local.
	learnedSet = "ll"
)

// tableOf is the port's table. One table per port means that adding or
// removing a port never touches (or makes the kernel re-validate) anything
// of another port's.
func tableOf(port string) *nftables.Table {
	return &nftables.Table{Name: tablePrefix + port, Family: nftables.TableFamilyNetdev}
}

// chainOf is the port's base chain: netdev ingress of the host end of the
// veth, so it sees exactly the frames the guest sends, before the bridge
// does, and no frame of the uplink or of another port. Its policy is drop
// (fail closed: an emptied chain cuts the guest off rather than letting it
// spoof); the rules end in a counted drop anyway, so drops can be counted.
func chainOf(t *nftables.Table, port string) *nftables.Chain {
	drop := nftables.ChainPolicyDrop
	return &nftables.Chain{
		Name:     chainName,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookIngress,
		Priority: nftables.ChainPriorityFilter,
		Device:   port,
		Policy:   &drop,
	}
}

// learnedOf is the port's set of learned link-locals. It lives in the
// port's own table, so it goes with the attachment and survives whatever
// learns into it.
func learnedOf(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: learnedSet, KeyType: nftables.TypeIP6Addr}
}
