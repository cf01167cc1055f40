package undo

import (
	"errors"
	"strings"
	"testing"
)

// Every step runs, newest first, even after one fails; failures are joined.
func TestRunAll(t *testing.T) {
	var s Stack
	var order []string
	for _, name := range []string{"a", "b", "c"} {
		s.Push(name, func() error {
			order = append(order, name)
			if name == "b" {
				return errors.New("b broke")
			}
			return nil
		})
	}
	err := s.Run()
	if strings.Join(order, "") != "cba" {
		t.Fatalf("order %v", order)
	}
	if err == nil || !strings.Contains(err.Error(), "undo b: b broke") {
		t.Fatalf("err = %v", err)
	}
	if s.Run() != nil || len(order) != 3 {
		t.Fatal("a stack runs once")
	}
}

func TestRelease(t *testing.T) {
	var s Stack
	s.Push("x", func() error { t.Fatal("released steps must not run"); return nil })
	s.Release()
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
}
