package plugin

import "context"

// addStep is one named step of ADD; its name is also the failpoint hit
// right after it. A step that makes several things hits failpoints of its
// own between them, named in inner.
type addStep struct {
	name  string
	fn    func(context.Context) error
	inner []string
}

// addSteps is ADD's one list of steps, in the order it runs them, bound
// to op. AddSteps reads the names from it, so a new step cannot escape
// the tests that walk them.
func addSteps(op *addOp) []addStep {
	return []addStep{
		{name: "record", fn: op.writeRecord},
		{name: "veth", fn: op.createVeth},
		{name: "ipam", fn: op.startIPAM},
		{name: "pod", fn: op.buildPodSide, inner: []string{"tap"}},
		{name: "up", fn: op.bringUpHost},
		{name: "lease", fn: op.awaitLease},
		{name: "stage", fn: op.stageRecord},
		{name: "spoof", fn: op.installSpoof},
		{name: "bridge-state", fn: op.joinBridgeState},
		{name: "publish", fn: op.publishRecord},
	}
}

// AddSteps names ADD's failpoints in the order it hits them: each step's
// inner ones, then the step's own. With the "failpoints" build tag,
// TAPBRIDGE_FAILPOINT=<name>:error fails ADD right there, <name>:exit
// crashes it.
func AddSteps() []string {
	var names []string
	for _, s := range addSteps(&addOp{}) { // method values only: nothing runs
		names = append(append(names, s.inner...), s.name)
	}
	return names
}
