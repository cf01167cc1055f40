package agent

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/tapbridge/tapbridge-cni/internal/state"
)

// The keys of unreadable records are found inside the joined error
// Records returns, so their ports are kept; any other error names none
// (a failed listing changes nothing at all).
func TestUnreadableKeys(t *testing.T) {
	joined := errors.Join(&state.UnreadableError{Key: "a", Err: errors.New("torn")},
		fmt.Errorf("wrapped: %w", &state.UnreadableError{Key: "b", Err: errors.New("empty")}))
	if got := unreadableKeys(joined); !reflect.DeepEqual(got, map[string]bool{"a": true, "b": true}) {
		t.Errorf("joined: %v", got)
	}
	if got := unreadableKeys(errors.New("readdir: EIO")); len(got) != 0 {
		t.Errorf("a listing error: %v", got)
	}
	if got := unreadableKeys(nil); len(got) != 0 {
		t.Errorf("nil: %v", got)
	}
}
