package plugin

import "context"

// addStep is one named step of ADD; its name is also the failpoint hit
// right after it.
type addStep struct {
	name string
	fn   func(context.Context) error
}

// addSteps is ADD's one list of steps, in the order it runs them, bound
// to op. AddSteps reads the names from it, so a new step cannot escape
// the tests that walk them.
func addSteps(op *addOp) []addStep {
	return []addStep{
		{"record", op.writeRecord},
		{"veth", op.createVeth},
		{"ipam", op.startIPAM},
		{"tap", op.createTap},
		{"redirect", op.addRedirect},
		{"up", op.bringUp},
		{"lease", op.awaitLease},
		{"stage", op.stageRecord},
		{"spoof", op.installSpoof},
		{"bridge-state", op.joinBridgeState},
		{"publish", op.publishRecord},
	}
}

// AddSteps names ADD's steps in the order it runs them. Each name is also
// a failpoint: with the "failpoints" build tag, TAPBRIDGE_FAILPOINT=
// <name>:error fails ADD right after that step, <name>:exit crashes it.
func AddSteps() []string {
	steps := addSteps(&addOp{}) // method values only: nothing runs
	names := make([]string, len(steps))
	for i, s := range steps {
		names[i] = s.name
	}
	return names
}
