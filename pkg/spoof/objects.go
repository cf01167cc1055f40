package spoof

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

const (
	tablePrefix   = "tapbridge-"
	baseChainName = "ports" // the base chain that dispatches to port chains
	portMapName   = "ports" // sets and chains have separate namespaces

	// bridgeFilterPriority is the bridge family's "filter" priority
	// (NF_BR_PRI_FILTER_BRIDGED); the library only names the inet ones.
	bridgeFilterPriority nftables.ChainPriority = -200

	// mapTxnID names the map inside one transaction so that the dispatch
	// rule can refer to it before it is committed. IDs are only compared
	// within a batch, so a constant is enough, and it keeps the library
	// from bumping its unsynchronised global ID counter.
	mapTxnID = 1
)

func tableOf(bridge string) *nftables.Table {
	return &nftables.Table{Name: tablePrefix + bridge, Family: nftables.TableFamilyBridge}
}

func baseChainOf(t *nftables.Table) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{
		Name:     baseChainName,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookPrerouting,
		Priority: nftables.ChainPriorityRef(bridgeFilterPriority),
		Policy:   &accept,
	}
}

func portMapOf(t *nftables.Table) *nftables.Set {
	return &nftables.Set{
		Table:    t,
		Name:     portMapName,
		ID:       mapTxnID,
		IsMap:    true,
		KeyType:  nftables.TypeIFName,
		DataType: nftables.TypeVerdict,
		// nft stores strings in host order; matching it makes `nft list`
		// print the keys as names.
		KeyByteOrder: binaryutil.NativeEndian,
	}
}

func portChainOf(t *nftables.Table, name string) *nftables.Chain {
	return &nftables.Chain{Name: name, Table: t}
}

// portElement is the map element that sends a port's frames to its chain.
func portElement(name string) nftables.SetElement {
	return nftables.SetElement{
		Key:         ifnameKey(name),
		VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: name},
	}
}

// ifnameKey pads a name to IFNAMSIZ, the width meta iifname loads.
func ifnameKey(name string) []byte {
	key := make([]byte, unix.IFNAMSIZ)
	copy(key, name)
	return key
}

// dispatchExprs is the base chain's only rule: iifname vmap @ports.
func dispatchExprs() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{
			SourceRegister: 1,
			SetName:        portMapName,
			SetID:          mapTxnID,
			IsDestRegSet:   true,
			DestRegister:   0, // the verdict register: this makes it a vmap
		},
	}
}

// queueSkeleton queues the table's shared objects. None of the messages is
// exclusive, so they succeed whether or not the objects exist. The base
// chain is flushed and its rule re-added rather than added once: that keeps
// it at exactly one rule without listing it first, and repairs it if it was
// tampered with; within the transaction no packet sees it empty.
func queueSkeleton(c *nftables.Conn, t *nftables.Table, set *nftables.Set) error {
	base := c.AddChain(baseChainOf(t))
	if err := c.AddSet(set, nil); err != nil {
		return fmt.Errorf("add map %s: %w", portMapName, err)
	}
	c.FlushChain(base)
	c.AddRule(&nftables.Rule{Table: t, Chain: base, Exprs: dispatchExprs()})
	return nil
}
