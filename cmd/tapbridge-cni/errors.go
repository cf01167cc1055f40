package main

import (
	"errors"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tapbridge/tapbridge-cni/internal/bridge"
	"github.com/tapbridge/tapbridge-cni/internal/config"
	"github.com/tapbridge/tapbridge-cni/internal/hostaddr"
	"github.com/tapbridge/tapbridge-cni/internal/ipam"
	"github.com/tapbridge/tapbridge-cni/internal/link"
	"github.com/tapbridge/tapbridge-cni/internal/plugin"
	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// tapbridge's own codes (the spec leaves 100+ to plugins); README lists them.
const (
	codeUnavailable      uint = 50 // STATUS: the plugin cannot serve ADD now
	codeAttachmentExists uint = 100
	codeNameTaken        uint = 101
	codeBridgeFull       uint = 102
	codeCheckFailed      uint = 103
)

// codes maps sentinel errors to CNI codes, first match wins: the STATUS
// and timeout classes come before an IPAM *types.Error they may wrap.
var codes = []struct {
	err  error
	code uint
}{
	{plugin.ErrUnavailable, codeUnavailable},
	{ipam.ErrTimeout, types.ErrTryAgainLater},
	{state.ErrLockTimeout, types.ErrTryAgainLater},
	{config.ErrDecode, types.ErrDecodingFailure},
	{config.ErrInvalid, types.ErrInvalidNetworkConfig},
	{config.ErrArgs, types.ErrInvalidEnvironmentVariables},
	{plugin.ErrNetns, types.ErrInvalidNetNS},
	{plugin.ErrPrevResult, types.ErrInvalidNetworkConfig},
	{bridge.ErrNotFound, types.ErrTryAgainLater},
	{bridge.ErrDown, types.ErrTryAgainLater},
	{bridge.ErrNotBridge, types.ErrInvalidNetworkConfig},
	{hostaddr.ErrNoAddress, types.ErrInvalidNetworkConfig},
	{plugin.ErrExists, codeAttachmentExists},
	{link.ErrNameTaken, codeNameTaken},
	{link.ErrBridgeFull, codeBridgeFull},
	{plugin.ErrCheck, codeCheckFailed},
}

// toCNI builds the one error the runtime sees. The message is the whole
// wrapped chain, which names the step and the object at fault.
func toCNI(err error) *types.Error {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return types.NewError(c.code, err.Error(), "")
		}
	}
	var cniErr *types.Error
	// IPAM's own error: keep its code. An IPAM that died without a word
	// has none (invoke reports code 0), and 0 is no error code.
	if errors.As(err, &cniErr) && cniErr.Code != 0 {
		return types.NewError(cniErr.Code, err.Error(), cniErr.Details)
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}
