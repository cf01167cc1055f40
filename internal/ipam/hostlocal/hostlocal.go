// Package hostlocal is the host-local IPAM plugin's ADD, DEL and CHECK,
// run in tapbridge's process, doing what the binary of the version go.mod
// pins does: the same files, the same lock, the same result and the same
// errors (the tests compare the two call by call). One difference, asked
// for by the caller (Call.Fresh, Call.Leased): what the caller knows of
// the attachment's addresses spares the reads of every lease of the store.
//
// The store (its files and their format) is the upstream code, imported:
// plugins/ipam/host-local/backend/disk. The rest is written here, after
// upstream's behaviour: the verbs live in the binary's main package, and
// upstream's backend/allocator imports plugins/pkg/ip, whose iptables and
// nftables helpers would bring sigs.k8s.io/knftables, go-iptables and
// ethtool into the plugin binary (which `make lint` forbids, rightly: the
// plugin needs none of them).
package hostlocal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// Call is one call as the binary would get it.
type Call struct {
	ContainerID string
	IfName      string
	Args        string // CNI_ARGS: host-local reads IP= from it
	Config      []byte // the network configuration (stdin)

	// Fresh vouches that the store holds no address of the attachment, so
	// ADD skips the duplicate check: the binary reads every file of the
	// store for it, a cost that grows with the node's attachments.
	Fresh bool
	// Leased, when not nil, are all the attachment's addresses: DEL
	// releases these files alone, each only if it names the attachment,
	// where the binary reads every file of the store to find them.
	Leased []net.IP
}

// Add allocates one address from each range set, the requested ones
// where asked, and returns the result with the config's cniVersion.
// Anything allocated is released again when any range fails.
func Add(ctx context.Context, c Call) (*current.Result, string, error) {
	conf, version, err := loadConfig(c.Config, c.Args)
	if err != nil {
		return nil, "", err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if conf.ResolvConf != "" {
		dns, err := readResolvConf(conf.ResolvConf)
		if err != nil {
			return nil, "", err
		}
		res.DNS = *dns
	}
	st, err := openStore(ctx, conf)
	if err != nil {
		return nil, "", err
	}
	defer st.Close()
	if res.IPs, err = allocate(st, conf, c); err != nil {
		return nil, "", err
	}
	res.Routes = conf.Routes
	return res, version, nil
}

// allocate takes one address per range set. A requested IP goes to the
// first range set that contains it; one left unplaced fails the call.
func allocate(st *store, conf *ipamConf, c Call) ([]*current.IPConfig, error) {
	requested := unique(conf.requested)
	var used []*allocator
	var ips []*current.IPConfig
	release := func() {
		for _, a := range used {
			_ = a.release(c.ContainerID, c.IfName)
		}
	}
	for idx := range conf.Ranges {
		a := newAllocator(conf.Ranges[idx], st, idx)
		var want net.IP
		if i := indexIn(conf.Ranges[idx], requested); i >= 0 {
			want = requested[i]
			requested = append(requested[:i], requested[i+1:]...)
		}
		ip, err := a.get(c.ContainerID, c.IfName, want, c.Fresh)
		if err != nil {
			release()
			return nil, fmt.Errorf("failed to allocate for range %d: %v", idx, err)
		}
		used = append(used, a)
		ips = append(ips, ip)
	}
	if len(requested) > 0 {
		release()
		msg := "failed to allocate all requested IPs:"
		for _, ip := range requested {
			msg += " " + ip.String()
		}
		return nil, errors.New(msg)
	}
	return ips, nil
}

// indexIn is the index of the first of ips inside the range set, or -1.
func indexIn(rs rangeSet, ips []net.IP) int {
	for i, ip := range ips {
		if rs.contains(ip) {
			return i
		}
	}
	return -1
}

// unique drops repeats (the same IP asked for by two conventions): the
// binary keeps the requests in a map by their text.
func unique(ips []net.IP) []net.IP {
	seen := map[string]bool{}
	var out []net.IP
	for _, ip := range ips {
		if !seen[ip.String()] {
			seen[ip.String()] = true
			out = append(out, ip)
		}
	}
	return out
}

// open loads the call's config and opens its store, as DEL and CHECK
// begin; the caller closes the store.
func open(ctx context.Context, c Call) (*ipamConf, *store, error) {
	conf, _, err := loadConfig(c.Config, c.Args)
	if err != nil {
		return nil, nil, err
	}
	st, err := openStore(ctx, conf)
	if err != nil {
		return nil, nil, err
	}
	return conf, st, nil
}

// Del releases every address of the attachment, range by range, going on
// past failures and reporting them all; only the leased ones when the
// caller knows them.
func Del(ctx context.Context, c Call) error {
	conf, st, err := open(ctx, c)
	if err != nil {
		return err
	}
	defer st.Close()
	if c.Leased != nil {
		// No torn-reservation sweep either: a caller that knows the lease
		// saw the ADD get it, so that ADD was not killed mid-reservation.
		return st.releaseLeased(c.ContainerID, c.IfName, c.Leased)
	}
	var msgs []string
	for idx := range conf.Ranges {
		if err := newAllocator(conf.Ranges[idx], st, idx).release(c.ContainerID, c.IfName); err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	if err := st.sweepTorn(); err != nil {
		msgs = append(msgs, err.Error())
	}
	if msgs != nil {
		return errors.New(strings.Join(msgs, ";"))
	}
	return nil
}

// Check succeeds when the store holds at least one address of the
// attachment, whichever it is (as the binary checks).
func Check(ctx context.Context, c Call) error {
	_, st, err := open(ctx, c)
	if err != nil {
		return err
	}
	defer st.Close()
	found, err := st.holds(c.ContainerID, c.IfName)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("host-local: Failed to find address added by container %v", c.ContainerID)
	}
	return nil
}
