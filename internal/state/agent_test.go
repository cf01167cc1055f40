package state

import (
	"errors"
	"testing"
)

func TestAgentLock(t *testing.T) {
	dir := t.TempDir()
	r := NewReader(dir)
	if running, err := r.AgentRunning(); err != nil || running {
		t.Fatalf("before any agent: running=%v err=%v", running, err)
	}
	l, err := LockAgent(dir)
	if err != nil {
		t.Fatal(err)
	}
	if running, err := r.AgentRunning(); err != nil || !running {
		t.Fatalf("with the lock held: running=%v err=%v", running, err)
	}
	if _, err := LockAgent(dir); !errors.Is(err, ErrAgentRunning) {
		t.Fatalf("second agent: err=%v, want ErrAgentRunning", err)
	}
	// Testing the lock must not take it: the agent still holds it alone.
	if running, _ := r.AgentRunning(); !running {
		t.Fatal("AgentRunning changed the answer")
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if running, err := r.AgentRunning(); err != nil || running {
		t.Fatalf("after release: running=%v err=%v", running, err)
	}
	l2, err := LockAgent(dir)
	if err != nil {
		t.Fatalf("a new agent after the first let go: %v", err)
	}
	l2.Release()
}
