package main

import (
	"fmt"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// IPAM's code is passed through; an IPAM error without one (a plugin
// that died silently) becomes 999, never the non-code 0.
func TestToCNIKeepsIPAMCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want uint
	}{
		{fmt.Errorf("IPAM x ADD: %w", &types.Error{Code: 111, Msg: "pool empty"}), 111},
		{fmt.Errorf("IPAM x ADD: %w", &types.Error{Msg: "netplugin failed with no error message"}), types.ErrInternal},
		{fmt.Errorf("plain"), types.ErrInternal},
	} {
		if got := toCNI(tc.err); got.Code != tc.want || got.Msg != tc.err.Error() {
			t.Errorf("toCNI(%v) = %d %q, want %d", tc.err, got.Code, got.Msg, tc.want)
		}
	}
}
