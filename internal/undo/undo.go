// Package undo is the rollback stack every ADD step registers with as soon
// as the thing it made exists. On failure the steps run in reverse, all of
// them, whatever fails, so a failed ADD leaves the node as it found it.
package undo

import (
	"errors"
	"fmt"
)

// Stack holds the undo steps of one ADD.
type Stack struct {
	steps []step
}

type step struct {
	name string
	fn   func() error
}

// Push registers how to undo what was just made.
func (s *Stack) Push(name string, fn func() error) {
	s.steps = append(s.steps, step{name, fn})
}

// Run undoes everything, newest first, and joins every failure.
func (s *Stack) Run() error {
	var errs []error
	for i := len(s.steps) - 1; i >= 0; i-- {
		if err := s.steps[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", s.steps[i].name, err))
		}
	}
	s.steps = nil
	return errors.Join(errs...)
}

// Release forgets the steps once ADD has succeeded.
func (s *Stack) Release() { s.steps = nil }
