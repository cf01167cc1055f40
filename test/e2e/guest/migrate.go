package guest

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Migration is what the source QEMU reports about a completed live
// migration (query-migrate).
type Migration struct {
	Total    time.Duration // from the migrate command to completion
	Setup    time.Duration // before the first RAM pass
	Downtime time.Duration // QEMU's estimate of the guest's pause: last pass, device state, switch-over
	RAMBytes int64         // transferred
	Passes   int64         // RAM dirty-sync passes
}

// queryMigrate is the part of QMP's MigrationInfo we read.
type queryMigrate struct {
	Status    string `json:"status"`
	Total     int64  `json:"total-time"`
	Setup     int64  `json:"setup-time"`
	Downtime  int64  `json:"downtime"`
	ErrorDesc string `json:"error-desc"`
	RAM       struct {
		Transferred int64 `json:"transferred"`
		Passes      int64 `json:"dirty-sync-count"`
	} `json:"ram"`
}

// MigrationURI is where a VM booted with Incoming listens for the
// migration stream; "" for any other VM.
func (vm *VM) MigrationURI() string {
	if !vm.incoming {
		return ""
	}
	return migrationURI(vm.tmpDir)
}

// withQMP runs fn on a fresh QMP connection to the VM.
func (vm *VM) withQMP(ctx context.Context, fn func(*qmp) error) error {
	q, err := dialQMP(ctx, qmpPath(vm.tmpDir))
	if err != nil {
		return fmt.Errorf("qemu %d: %w", vm.PID(), err)
	}
	return errors.Join(fn(q), q.close())
}

// Status is QEMU's run state: "running", "inmigrate" (waiting for a
// migration), "postmigrate" (the source after one), "paused", ...
func (vm *VM) Status(ctx context.Context) (string, error) {
	var st struct {
		Status string `json:"status"`
	}
	err := vm.withQMP(ctx, func(q *qmp) error { return q.execute(ctx, "query-status", nil, &st) })
	return st.Status, err
}

// WaitStatus polls the run state until it is want.
func (vm *VM) WaitStatus(ctx context.Context, want string) error {
	for {
		got, err := vm.Status(ctx)
		if err != nil {
			return err
		}
		if got == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("qemu %d: run state %q, want %q: %w", vm.PID(), got, want, ctx.Err())
		case <-vm.exited:
			return fmt.Errorf("qemu %d exited while waiting for run state %q", vm.PID(), want)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Migrate live-migrates the running guest of src into dst, a VM booted
// with Incoming, over dst's unix socket, and returns once the source QEMU
// reports the migration completed and dst runs the guest. src stays, paused
// ("postmigrate"): stopping it is the caller's (Quit), as it is libvirt's.
func Migrate(ctx context.Context, src, dst *VM) (Migration, error) {
	uri := dst.MigrationURI()
	if uri == "" {
		return Migration{}, errors.New("migrate: the target VM was not booted with Incoming")
	}
	if err := dst.WaitStatus(ctx, "inmigrate"); err != nil {
		return Migration{}, fmt.Errorf("migrate: target: %w", err)
	}
	var info queryMigrate
	err := src.withQMP(ctx, func(q *qmp) error {
		if err := q.execute(ctx, "migrate", map[string]any{"uri": uri}, nil); err != nil {
			return err
		}
		return pollMigration(ctx, q, &info)
	})
	if err != nil {
		return Migration{}, fmt.Errorf("migrate qemu %d to qemu %d: %w", src.PID(), dst.PID(), err)
	}
	if err := dst.WaitStatus(ctx, "running"); err != nil {
		return Migration{}, fmt.Errorf("migrate: target: %w", err)
	}
	ms := func(v int64) time.Duration { return time.Duration(v) * time.Millisecond }
	return Migration{Total: ms(info.Total), Setup: ms(info.Setup), Downtime: ms(info.Downtime), RAMBytes: info.RAM.Transferred, Passes: info.RAM.Passes}, nil
}

// pollMigration asks the source for the migration's progress until it
// has ended.
func pollMigration(ctx context.Context, q *qmp, info *queryMigrate) error {
	for {
		*info = queryMigrate{}
		if err := q.execute(ctx, "query-migrate", nil, info); err != nil {
			return err
		}
		switch info.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", info.Status, info.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migration still %q: %w", info.Status, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Quit asks QEMU to exit (QMP quit) and waits until it has: how the
// source of a completed migration is stopped.
func (vm *VM) Quit(ctx context.Context) error {
	err := vm.withQMP(ctx, func(q *qmp) error { return q.execute(ctx, "quit", nil, nil) })
	select {
	case <-vm.exited:
		// QEMU may close the socket before it replies: the exit is what counts.
		<-vm.con.done
		return nil
	case <-ctx.Done():
		return fmt.Errorf("quit qemu %d: %w (qmp: %v)", vm.PID(), ctx.Err(), err)
	}
}
