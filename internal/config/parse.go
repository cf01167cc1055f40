package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// Net is a validated network configuration for one call.
type Net struct {
	Bytes         []byte // stdin as received: IPAM gets the very same document
	Name          string
	CNIVersion    string
	Bridge        string
	MTU           int // 0: take the bridge's
	Tap           Tap
	Host          Host
	DataDir       string
	LogFile       string
	LogLevel      slog.Level
	SpoofCheck    bool
	PortIsolation bool
	DHCP          *DHCP // nil: the node agent does not serve this network's guests
	// LearnLinkLocal: the node agent learns each guest's own IPv6
	// link-local from its DAD, and the port lets it through from then on.
	LearnLinkLocal bool
	PersistentIPs  bool // allowPersistentIPs: the IPAM keeps addresses per IPAMClaim
	LockTimeout    time.Duration
	IPAMTimeout    time.Duration
	IPAMType       string           // "" means L2 only
	IPAMExec       bool             // exec the IPAM binary even for a type run in process
	MAC            net.HardwareAddr // the requested guest MAC; nil: derive one
	Pod            Pod              // from CNI_ARGS; empty outside Kubernetes
	GC             *GCList          // nil when the runtime sent no valid-attachments key
	PrevResult     *current.Result  // nil when there is none
	Ignored        []error          // for DEL (Env.ForDel): what is wrong with fields DEL does not use
}

// Pod is the Kubernetes pod of the call, as kubelet or Multus name it in
// CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME).
type Pod struct {
	Namespace string
	Name      string
}

// Tap is how the VM's TAP device is made. Owner and Group are -1 for "none".
type Tap struct {
	Owner      int64
	Group      int64
	MultiQueue bool
}

// Host says where this node's address on each VM subnet comes from.
type Host struct {
	Disabled  bool
	Node      string
	Static    []netip.Prefix // this node's explicit addresses
	Pool      []netip.Prefix
	ProbeWait time.Duration
}

// GCList is the set of attachments the runtime still considers valid.
type GCList struct {
	Valid map[types.GCAttachment]bool
}

// Parse decodes and validates stdin for one call. It touches nothing.
func Parse(stdin []byte, env Env) (*Net, error) {
	if len(stdin) > MaxConfigBytes {
		return nil, invalid("config", "network configuration is %d bytes, more than the %d allowed", len(stdin), MaxConfigBytes)
	}
	raw, err := decode(stdin, env.ForDel)
	if err != nil {
		return nil, err
	}
	n := &Net{Bytes: stdin, Name: raw.Name, CNIVersion: raw.CNIVersion, IPAMType: raw.IPAM.Type, IPAMExec: raw.IPAMExec}
	for _, step := range parseSteps {
		if err := step.parse(raw, env, n); err != nil {
			if env.ForDel && !step.del {
				n.Ignored = append(n.Ignored, err)
				continue
			}
			return nil, err
		}
	}
	return n, nil
}

// decode reads stdin into Raw. For DEL, a field of the wrong type that
// DEL does not use must not fail the call either: the document is then
// read again into only what DEL needs (delRaw), the rest left empty.
func decode(stdin []byte, forDel bool) (*Raw, error) {
	raw := &Raw{}
	err := json.NewDecoder(bytes.NewReader(stdin)).Decode(raw)
	if err == nil {
		return raw, nil
	}
	decodeErr := &FieldError{Field: "config", Msg: err.Error(), Kind: ErrDecode}
	if !forDel {
		return nil, decodeErr
	}
	var d delRaw
	if err := json.NewDecoder(bytes.NewReader(stdin)).Decode(&d); err != nil {
		return nil, decodeErr
	}
	return &Raw{PluginConf: d.PluginConf, Bridge: d.Bridge, DataDir: d.DataDir, LockTimeout: d.LockTimeout,
		IPAMTimeout: d.IPAMTimeout, IPAMExec: d.IPAMExec}, nil
}

// delRaw is what DEL reads of the config when the whole does not decode.
type delRaw struct {
	types.PluginConf
	Bridge      string `json:"bridge"`
	DataDir     string `json:"dataDir"`
	LockTimeout string `json:"lockTimeout,omitempty"`
	IPAMTimeout string `json:"ipamTimeout,omitempty"`
	IPAMExec    bool   `json:"ipamExec"`
}

// parseSteps are Parse's steps in order; del marks those DEL needs (where
// the state is, which bridge and lock, how long to wait). DEL must not
// fail on the others: a config ADD refused created nothing, and a runtime
// (or Multus, replaying its cached copy) that gets an error from DEL
// retries it for good, leaving the pod Terminating. And a config that a
// newer tapbridge refuses must still tear down what an older one made.
var parseSteps = []struct {
	parse func(*Raw, Env, *Net) error
	del   bool
}{
	{parseBasics, true}, {parseMTU, false}, {parsePersistentIPs, false}, {parseTap, false}, {parseHost, false}, {parseDHCP, false},
	{parseLearnLinkLocal, false}, {parseTimeouts, true}, {checkProbeBound, false}, {parseLog, false},
	{parseCNIArgs, false}, {parseGC, false}, {parsePrevResult, false},
}

func parseMTU(raw *Raw, _ Env, n *Net) error {
	if raw.MTU != 0 && (raw.MTU < minMTU || raw.MTU > maxMTU) {
		return invalid("mtu", "%d is outside %d..%d (0 means the bridge's MTU)", raw.MTU, minMTU, maxMTU)
	}
	n.MTU = raw.MTU
	return nil
}

func parseBasics(raw *Raw, _ Env, n *Net) error {
	if raw.Bridge == "" {
		return invalid("bridge", "is required: name the host bridge that enslaves the node's NIC")
	}
	if err := checkLinkName(raw.Bridge); err != nil {
		return invalid("bridge", "%q %v", raw.Bridge, err)
	}
	n.Bridge, n.PortIsolation = raw.Bridge, raw.PortIsolation
	n.SpoofCheck = raw.SpoofCheck == nil || *raw.SpoofCheck
	n.DataDir = raw.DataDir
	if n.DataDir == "" {
		n.DataDir = DefaultDataDir
	}
	if !strings.HasPrefix(n.DataDir, "/") {
		return invalid("dataDir", "%q must be an absolute path", n.DataDir)
	}
	return nil
}

// parsePersistentIPs checks allowPersistentIPs: a boolean, and true only
// with an IPAM (the claim's addresses come from it).
func parsePersistentIPs(raw *Raw, _ Env, n *Net) error {
	if len(raw.AllowPersistentIPs) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw.AllowPersistentIPs, &n.PersistentIPs); err != nil {
		return invalid("allowPersistentIPs", "%s is not a boolean", raw.AllowPersistentIPs)
	}
	if n.PersistentIPs && raw.IPAM.Type == "" {
		return invalid("allowPersistentIPs", "is true but the network has no ipam section to keep the addresses (use an IPAMClaims-aware IPAM such as tapbridge-ipam)")
	}
	return nil
}

// checkLinkName applies the kernel's rules for interface names (dev_valid_name).
func checkLinkName(name string) error {
	switch {
	case len(name) > 15:
		return fmt.Errorf("is longer than 15 bytes")
	case name == "." || name == "..":
		return fmt.Errorf("is not a valid interface name")
	case strings.ContainsAny(name, "/: \t\n"):
		return fmt.Errorf("contains '/', ':' or whitespace")
	}
	return nil
}

func parseTap(raw *Raw, _ Env, n *Net) error {
	n.Tap = Tap{Owner: -1, Group: -1, MultiQueue: raw.Tap.MultiQueue}
	for field, v := range map[string]*int64{"tap.owner": raw.Tap.Owner, "tap.group": raw.Tap.Group} {
		if v != nil && (*v < 0 || *v >= 1<<32-1) {
			return invalid(field, "%d is not a valid id (0..4294967294)", *v)
		}
	}
	if raw.Tap.Owner != nil {
		n.Tap.Owner = *raw.Tap.Owner
	}
	if raw.Tap.Group != nil {
		n.Tap.Group = *raw.Tap.Group
	}
	return nil
}

// parseLearnLinkLocal: learning is off unless asked for. It loosens the
// port (a link-local the guest claims passes, not only the one its MAC
// gives) and makes the network need the node agent, so it is the admin's
// decision; and it means something only where the port checks IPv6
// sources, which it does with spoofCheck on and addresses from IPAM.
func parseLearnLinkLocal(raw *Raw, _ Env, n *Net) error {
	if !raw.LearnLinkLocal {
		return nil
	}
	switch {
	case !n.SpoofCheck:
		return invalid("learnLinkLocal", "needs spoofCheck: without it every link-local passes the port and there is nothing to learn")
	case raw.IPAM.Type == "":
		return invalid("learnLinkLocal", "needs an ipam section: an L2-only port lets every IPv6 source through and there is nothing to learn")
	}
	n.LearnLinkLocal = true
	return nil
}

func parseTimeouts(raw *Raw, _ Env, n *Net) error {
	var err error
	if n.LockTimeout, err = duration("lockTimeout", raw.LockTimeout, DefaultLockTimeout); err != nil {
		return err
	}
	n.IPAMTimeout, err = duration("ipamTimeout", raw.IPAMTimeout, DefaultIPAMTimeout)
	return err
}

func duration(field, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > time.Hour {
		return 0, invalid(field, "%q is not a duration between 0 and 1h (e.g. \"10s\")", s)
	}
	return d, nil
}

var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError,
}

func parseLog(raw *Raw, _ Env, n *Net) error {
	// Set only once valid: a DEL that ignores this step's error must not
	// open a relative path in whatever directory the runtime runs in.
	if raw.LogFile != "" && !strings.HasPrefix(raw.LogFile, "/") {
		return invalid("logFile", "%q must be an absolute path", raw.LogFile)
	}
	n.LogFile = raw.LogFile
	n.LogLevel = slog.LevelWarn
	if raw.LogLevel != "" {
		// Exactly the four names (any case): slog's own parser would also
		// take offsets such as "warn+2", which the config doc does not offer.
		level, ok := logLevels[strings.ToLower(raw.LogLevel)]
		if !ok {
			return invalid("logLevel", "%q is not one of debug, info, warn, error", raw.LogLevel)
		}
		n.LogLevel = level
	}
	return nil
}

func parsePrevResult(raw *Raw, _ Env, n *Net) error {
	if raw.RawPrevResult == nil {
		return nil
	}
	if err := version.ParsePrevResult(&raw.PluginConf); err != nil {
		return &FieldError{Field: "prevResult", Msg: err.Error(), Kind: ErrDecode}
	}
	res, err := current.NewResultFromResult(raw.PrevResult)
	if err != nil {
		return &FieldError{Field: "prevResult", Msg: err.Error(), Kind: ErrDecode}
	}
	n.PrevResult = res
	return nil
}
