package main

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tapbridge/tapbridge-cni/internal/kubeapi"
	"github.com/tapbridge/tapbridge-cni/internal/kubeipam"
	"github.com/tapbridge/tapbridge-cni/internal/selection"
)

var errKubeconfig = errors.New("cannot use the kubeconfig")

// The IPAM's own codes (CNI leaves 100 and up to plugins). README's
// "tapbridge-ipam" section lists them.
const (
	codeNotAvailable = 50 // STATUS: the plugin cannot serve an ADD now (CNI 1.1)
	codeCheck        = 103
	codeFull         = 110
	codeClaimSpec    = 111
	codeAnnotation   = 112
	codeForbidden    = 113
	codeNoClaim      = 114
	codeNoPod        = 115
	codeRequest      = 116
	codeTaken        = 117
)

// codes maps each error kind to its CNI code, most specific first: an
// API failure while reading a claim is the API's failure.
var codes = []struct {
	kind error
	code uint
}{
	{kubeipam.ErrDecode, types.ErrDecodingFailure},
	{kubeipam.ErrInvalid, types.ErrInvalidNetworkConfig},
	{errKubeconfig, types.ErrInvalidNetworkConfig},
	{kubeipam.ErrArgs, types.ErrInvalidEnvironmentVariables},
	{kubeapi.ErrUnavailable, types.ErrTryAgainLater},
	{kubeapi.ErrForbidden, codeForbidden},
	{kubeipam.ErrFull, codeFull},
	{kubeipam.ErrClaimSpec, codeClaimSpec},
	{selection.ErrMalformed, codeAnnotation},
	{kubeipam.ErrNoClaim, codeNoClaim},
	{kubeipam.ErrNoPod, codeNoPod},
	{kubeipam.ErrRequest, codeRequest},
	{kubeipam.ErrTaken, codeTaken},
	{kubeipam.ErrCheck, codeCheck},
}

// asCNI turns err into a CNI error whose message names the network and
// the attachment (skel drops any wrapping around a *types.Error).
func asCNI(err error, c *call) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if c != nil {
		a := c.conf.Attachment
		msg = fmt.Sprintf("tapbridge-ipam: network %s, attachment %s/%s: %s", c.conf.Network, a.ContainerID, a.IfName, msg)
	} else {
		msg = "tapbridge-ipam: " + msg
	}
	for _, k := range codes {
		if errors.Is(err, k.kind) {
			return types.NewError(k.code, msg, "")
		}
	}
	return types.NewError(types.ErrInternal, msg, "")
}

// statusError: STATUS answers 50 for anything that stops an ADD, except
// a config it cannot read (its own code).
func statusError(err error) error {
	for _, kind := range []error{kubeipam.ErrDecode, kubeipam.ErrInvalid, errKubeconfig} {
		if errors.Is(err, kind) {
			return asCNI(err, nil)
		}
	}
	return types.NewError(codeNotAvailable, "tapbridge-ipam: "+err.Error(), "")
}
