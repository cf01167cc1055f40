package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Saved is a per-device kernel setting of the bridge that tapbridge
// changes for a moment (promote_secondaries, around the removal of its
// own address), with the value to put back. It is saved durably before
// the change and forgotten after the restore, so a call that finds one
// knows a crash cut the moment short and restores the value first.
type Saved struct {
	Setting string `json:"setting"` // the name under net/ipv4/conf/<bridge>/
	Boot    string `json:"boot"`    // the kernel's boot ID: a reboot made the device anew
	Index   int    `json:"index"`   // the bridge's ifindex: a bridge made anew has its own value
	Old     string `json:"old"`     // the value to put back
	Set     string `json:"set"`     // the value tapbridge wrote
}

func savedDir(bridgeDir string) string { return filepath.Join(bridgeDir, "saved") }

func (b Bridge) savedPath(setting string) string {
	return filepath.Join(savedDir(b.dir), setting)
}

// SaveSetting records s durably before the setting is changed; it fails
// with ErrExists while an earlier one is saved (restore that first).
func (b Bridge) SaveSetting(s Saved) error {
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode saved %s of %s: %w", s.Setting, b.Name, err)
	}
	return createFile(b.savedPath(s.Setting), append(data, '\n'))
}

// SavedSetting reads a saved setting, if any.
func (b Bridge) SavedSetting(setting string) (Saved, bool, error) {
	data, err := readFile(b.savedPath(setting))
	if errors.Is(err, ErrNotFound) {
		return Saved{}, false, nil
	}
	if err != nil {
		return Saved{}, false, fmt.Errorf("read saved %s of %s: %w", setting, b.Name, err)
	}
	var s Saved
	if err := json.Unmarshal(data, &s); err != nil {
		return Saved{}, false, fmt.Errorf("decode saved %s of %s: %w", setting, b.Name, err)
	}
	return s, true, nil
}

// ForgetSetting removes a saved setting once its value is back (nil if
// there is none). Not synced: a power loss that undoes it brings back a
// setting of an earlier boot, which is never restored.
func (b Bridge) ForgetSetting(setting string) error {
	if err := removeFile(b.savedPath(setting)); err != nil {
		return err
	}
	if err := os.Remove(savedDir(b.dir)); err != nil && !isNotEmptyOrGone(err) {
		return fmt.Errorf("remove %s: %w", savedDir(b.dir), err)
	}
	return nil
}

func isNotEmptyOrGone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST)
}
