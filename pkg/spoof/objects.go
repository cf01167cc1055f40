package spoof

import (
	"github.com/tapbridge/tapbridge-cni/pkg/nft"
	"golang.org/x/sys/unix"
)

const (
	// tablePrefix + the port name is the port's own table.
	tablePrefix = "tapbridge-"
	// chainName is the table's only chain, hooked on the port's ingress.
	chainName = "guest"
)

// tableOf is the port's table. One table per port means that adding or
// removing a port never touches (or makes the kernel re-validate) anything
// of another port's.
func tableOf(port string) nft.Table {
	return nft.Table{Family: nft.Netdev, Name: tablePrefix + port}
}

// chainOf is the port's base chain: netdev ingress of the host end of the
// veth, so it sees exactly the frames the guest sends, before the bridge
// does, and no frame of the uplink or of another port. Its policy is drop
// (fail closed: an emptied chain cuts the guest off rather than letting it
// spoof); the rules end in a counted drop anyway, so drops can be counted.
func chainOf(port string) nft.Chain {
	return nft.Chain{
		Table:  tableOf(port),
		Name:   chainName,
		Hook:   &nft.Hook{Type: "filter", Num: unix.NF_NETDEV_INGRESS, Priority: nft.FilterPriority, Device: port},
		Policy: nft.Drop,
	}
}
