package nft

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Family is a table's address family.
type Family uint8

// Netdev tables hold chains hooked on one device's ingress or egress.
const Netdev Family = unix.NFPROTO_NETDEV

// Table names a table.
type Table struct {
	Family Family
	Name   string
}

// Chain is a chain of a table; Hook is nil for a regular chain.
type Chain struct {
	Table  Table
	Name   string
	Hook   *Hook
	Policy Verdict // base chains only
}

// Hook is where a base chain sees packets.
type Hook struct {
	Type     string // "filter"
	Num      uint32 // e.g. unix.NF_NETDEV_INGRESS
	Priority int32
	Device   string // netdev family: the device hooked on
}

// FilterPriority is the priority nft(8) calls "filter".
const FilterPriority int32 = 0

func encodeTable(a *attrs, t Table) { a.str(unix.NFTA_TABLE_NAME, t.Name) }

// TableInfo is what GetTable reports of a table.
type TableInfo struct {
	// Dormant tables keep their chains but have their hooks unregistered:
	// their rules see no packet.
	Dormant bool
}

func decodeTable(b []byte) (TableInfo, error) {
	m, err := attrMap(b)
	if err != nil {
		return TableInfo{}, fmt.Errorf("decode table: %w", err)
	}
	flags, _ := be32(m[unix.NFTA_TABLE_FLAGS])
	return TableInfo{Dormant: flags&unix.NFT_TABLE_F_DORMANT != 0}, nil
}

func encodeChain(a *attrs, c Chain) {
	a.str(unix.NFTA_CHAIN_TABLE, c.Table.Name)
	a.str(unix.NFTA_CHAIN_NAME, c.Name)
	if c.Hook == nil {
		return
	}
	a.nest(unix.NFTA_CHAIN_HOOK, func(h *attrs) {
		h.u32(unix.NFTA_HOOK_HOOKNUM, c.Hook.Num)
		h.u32(unix.NFTA_HOOK_PRIORITY, uint32(c.Hook.Priority))
		if c.Hook.Device != "" {
			h.str(unix.NFTA_HOOK_DEV, c.Hook.Device)
		}
	})
	a.u32(unix.NFTA_CHAIN_POLICY, uint32(c.Policy))
	a.str(unix.NFTA_CHAIN_TYPE, c.Hook.Type)
}

// encodeRuleChain names the chain a rule message is about.
func encodeRuleChain(a *attrs, c Chain) {
	a.str(unix.NFTA_RULE_TABLE, c.Table.Name)
	a.str(unix.NFTA_RULE_CHAIN, c.Name)
}

// decodeChain decodes a NEWCHAIN message's attributes. A chain hooked on
// more than one device (NFTA_HOOK_DEVS) reports no Device.
func decodeChain(t Table, b []byte) (Chain, error) {
	m, err := attrMap(b)
	if err != nil {
		return Chain{}, fmt.Errorf("decode chain: %w", err)
	}
	c := Chain{Table: t, Name: cstring(m[unix.NFTA_CHAIN_NAME])}
	hook, ok := m[unix.NFTA_CHAIN_HOOK]
	if !ok {
		return c, nil
	}
	hm, err := attrMap(hook)
	if err != nil {
		return Chain{}, fmt.Errorf("decode chain %s hook: %w", c.Name, err)
	}
	num, _ := be32(hm[unix.NFTA_HOOK_HOOKNUM])
	prio, _ := be32(hm[unix.NFTA_HOOK_PRIORITY])
	policy, _ := be32(m[unix.NFTA_CHAIN_POLICY])
	c.Hook = &Hook{Type: cstring(m[unix.NFTA_CHAIN_TYPE]), Num: num, Priority: int32(prio),
		Device: cstring(hm[unix.NFTA_HOOK_DEV])}
	c.Policy = Verdict(int32(policy))
	return c, nil
}

// decodeRule decodes a NEWRULE message's attributes into its expressions.
func decodeRule(b []byte) ([]Expr, error) {
	m, err := attrMap(b)
	if err != nil {
		return nil, fmt.Errorf("decode rule: %w", err)
	}
	exprs, err := decodeExprs(m[unix.NFTA_RULE_EXPRESSIONS])
	if err != nil {
		return nil, fmt.Errorf("decode rule expressions: %w", err)
	}
	return exprs, nil
}
