package kubeipam

import "errors"

// What can go wrong besides the config and the API's availability
// (kubeapi.ErrUnavailable, kubeapi.ErrForbidden) and a malformed
// annotation (selection.ErrMalformed); cmd/tapbridge-ipam maps each to
// a CNI code.
var (
	ErrFull         = errors.New("no free address")
	ErrOtherNetwork = errors.New("IPAMClaim is for another network")
	ErrNoClaim      = errors.New("IPAMClaim not found")
	ErrNoPod        = errors.New("pod not found")
	ErrCheck        = errors.New("allocation check failed")
	ErrNotReady     = errors.New("IPAM cannot serve an ADD now")
)
