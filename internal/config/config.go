// Package config turns a CNI network configuration and the runtime's
// arguments into a validated Net. It is pure: bytes and strings in, a value
// or an error out, so every check happens before any side effect.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// Defaults that a production node can rely on.
const (
	DefaultDataDir     = "/var/lib/cni/tapbridge"
	DefaultLockTimeout = 10 * time.Second
	DefaultIPAMTimeout = 60 * time.Second
	DefaultProbeWait   = 200 * time.Millisecond
	MaxConfigBytes     = 1 << 20 // stdin cap: a network config is a few KiB
	minMTU             = 68      // the smallest MTU IPv4 allows (RFC 791)
	maxMTU             = 65535
)

// ErrInvalid marks a configuration that decodes but cannot be used (CNI code 7).
var ErrInvalid = errors.New("invalid network configuration")

// ErrDecode marks a configuration that is not the JSON we expect (CNI code 6).
var ErrDecode = errors.New("cannot decode network configuration")

// ErrArgs marks bad CNI_ARGS (CNI code 4).
var ErrArgs = errors.New("invalid CNI_ARGS")

// FieldError names the field at fault, so a user can fix it without a log.
type FieldError struct {
	Field string
	Msg   string
	Kind  error // ErrInvalid, ErrDecode or ErrArgs
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }
func (e *FieldError) Unwrap() error { return e.Kind }

func invalid(field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...), Kind: ErrInvalid}
}

// Raw is the JSON document as users write it; key names are the contract.
type Raw struct {
	types.PluginConf
	Bridge         string         `json:"bridge"`
	MTU            int            `json:"mtu"`
	MAC            string         `json:"mac,omitempty"`
	Tap            RawTap         `json:"tap"`
	HostAddress    RawHostAddress `json:"hostAddress"`
	DataDir        string         `json:"dataDir"`
	LogFile        string         `json:"logFile"`
	LogLevel       string         `json:"logLevel"`
	SpoofCheck     *bool          `json:"spoofCheck,omitempty"`
	PortIsolation  bool           `json:"portIsolation"`
	DHCP           *RawDHCP       `json:"dhcp,omitempty"`
	LearnLinkLocal bool           `json:"learnLinkLocal"`
	// AllowPersistentIPs is read by the kubevirt-ipam-controller from the
	// NAD (it then makes an IPAMClaim per VM network); the plugin only
	// checks it.
	AllowPersistentIPs json.RawMessage  `json:"allowPersistentIPs,omitempty"`
	LockTimeout        string           `json:"lockTimeout,omitempty"`
	IPAMTimeout        string           `json:"ipamTimeout,omitempty"`
	IPAMExec           bool             `json:"ipamExec"`
	RuntimeConfig      RawRuntimeConfig `json:"runtimeConfig"`
	Args               RawArgs          `json:"args"`
	Attachments        json.RawMessage  `json:"cni.dev/valid-attachments,omitempty"`
	OldAttachment      json.RawMessage  `json:"cni.dev/attachments,omitempty"` // libcni sends both (cni#1101)
}

// RawTap is the "tap" object.
type RawTap struct {
	Owner      *int64 `json:"owner,omitempty"`
	Group      *int64 `json:"group,omitempty"`
	MultiQueue bool   `json:"multiQueue"`
}

// RawHostAddress is the "hostAddress" object.
type RawHostAddress struct {
	Disabled  bool                `json:"disabled"`
	NodeName  string              `json:"nodeName"`
	Static    map[string][]string `json:"static"`
	Pool      []string            `json:"pool"`
	ProbeWait string              `json:"probeWait,omitempty"`
}

// RawRuntimeConfig carries the capability arguments (mac, ips).
type RawRuntimeConfig struct {
	MAC string   `json:"mac,omitempty"`
	IPs []string `json:"ips,omitempty"`
}

// RawArgs is the "args" convention: args.cni.{mac,ips}.
type RawArgs struct {
	CNI struct {
		MAC string   `json:"mac,omitempty"`
		IPs []string `json:"ips,omitempty"`
	} `json:"cni"`
}

// Env is what the runtime passes besides stdin.
type Env struct {
	ContainerID string
	IfName      string
	Args        string // CNI_ARGS
	Hostname    string // the default node name
	ForDel      bool   // parse for DEL: only the fields DEL needs must be valid (see parseSteps)
}
