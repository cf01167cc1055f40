package kubeipam

import "errors"

// What can go wrong besides the config and the API's availability
// (kubeapi.ErrUnavailable, kubeapi.ErrForbidden) and a malformed
// annotation (selection.ErrMalformed), and besides a static request's
// (ErrRequest, ErrTaken, requests.go); cmd/tapbridge-ipam maps each to a
// CNI code.
var (
	ErrFull      = errors.New("no free address")
	ErrClaimSpec = errors.New("IPAMClaim is for another network or interface")
	ErrNoClaim   = errors.New("IPAMClaim not found")
	ErrNoPod     = errors.New("pod not found")
	ErrCheck     = errors.New("allocation check failed")
	ErrNotReady  = errors.New("IPAM cannot serve an ADD now")
)
