package state

import (
	"errors"
	"os"
	"testing"
)

// A saved setting is read back whole, a second save is refused until
// the first is forgotten, and forgetting leaves nothing behind.
func TestSavedSetting(t *testing.T) {
	st, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := st.Bridge("br-test")
	want := Saved{Setting: "promote_secondaries", Boot: "b00t", Index: 7, Old: "0", Set: "1"}
	if err := b.SaveSetting(want); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := b.SavedSetting(want.Setting); err != nil || !ok || got != want {
		t.Fatalf("read back %+v, %v, %v; want %+v", got, ok, err, want)
	}
	if err := b.SaveSetting(want); !errors.Is(err, ErrExists) {
		t.Fatalf("second save: %v, want ErrExists", err)
	}
	for range 2 { // the second finds nothing to forget
		if err := b.ForgetSetting(want.Setting); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, err := b.SavedSetting(want.Setting); err != nil || ok {
		t.Fatalf("after forget: %v, %v", ok, err)
	}
	if _, err := os.Stat(savedDir(b.dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the saved directory is left: %v", err)
	}
}
