package plugin

import (
	"context"
	"fmt"

	"github.com/tapbridge/tapbridge-cni/internal/bridge"
	"github.com/tapbridge/tapbridge-cni/internal/failpoint"
	"github.com/tapbridge/tapbridge-cni/internal/redirect"
	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// Status reports whether an ADD could succeed now: the bridge is there
// and up, the state dir is writable, the kernel has the data path's
// features, and IPAM says it is ready.
func (p *Plugin) Status(ctx context.Context) error {
	checks := []func() error{
		func() error {
			b, err := bridge.Lookup(p.Net.Bridge)
			if err != nil {
				return err
			}
			return b.CheckUp()
		},
		func() error {
			st, err := state.Open(p.Net.DataDir)
			if err != nil {
				return err
			}
			return st.Writable()
		},
		func() error {
			// The failpoint lets tests see the answer for a kernel that
			// lacks a feature, which this one cannot fake.
			if err := failpoint.Hit("kernel-check"); err != nil {
				return err
			}
			return redirect.CheckKernel()
		},
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	if p.Net.IPAMType != "" {
		if err := p.ipam().Status(ctx); err != nil {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	return nil
}
