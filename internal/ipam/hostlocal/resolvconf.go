package hostlocal

import (
	"bufio"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// readResolvConf reads the DNS settings of ipam.resolvConf into the
// result, as the binary does: nameserver, domain, search and options
// lines; comments (# or ;), blank lines and lines without a value are
// skipped, and a later domain line wins.
func readResolvConf(path string) (*types.DNS, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dns := &types.DNS{}
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		line := strings.TrimSpace(lines.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		words := strings.Fields(line)
		if len(words) < 2 {
			continue
		}
		switch key, values := words[0], words[1:]; key {
		case "nameserver":
			dns.Nameservers = append(dns.Nameservers, values[0])
		case "domain":
			dns.Domain = values[0]
		case "search":
			dns.Search = append(dns.Search, values...)
		case "options":
			dns.Options = append(dns.Options, values...)
		}
	}
	if err := lines.Err(); err != nil {
		return nil, err
	}
	return dns, nil
}
