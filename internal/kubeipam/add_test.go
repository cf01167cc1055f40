package kubeipam

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tapbridge/tapbridge-cni/internal/allocation"
)

// TestAddUserNewUID: a claim's allocation deleted and made again by
// another owner between the ADD's read and its update (a Conflict, then
// a re-read with a new UID) is not joined: the ADD starts over.
func TestAddUserNewUID(t *testing.T) {
	ctx := context.Background()
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{allocation.GVR: "IPAllocationList"})
	store := allocation.Store{Dynamic: dyn}
	addr := netip.MustParseAddr("10.0.0.5")
	stranger := allocation.User{ContainerID: "stranger", IfName: "net1", Node: "n1"}
	if _, err := store.Create(ctx, &allocation.Allocation{UID: "new",
		Spec: allocation.Spec{Network: "nw", Address: addr.String(), Users: []allocation.User{stranger}}}); err != nil {
		t.Fatal(err)
	}
	conflicts := 0
	dyn.PrependReactor("update", "ipallocations", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts > 0 {
			return false, nil, nil
		}
		conflicts++
		return true, nil, apierrors.NewConflict(allocation.GVR.GroupResource(), allocation.Name("nw", addr), errors.New("changed"))
	})
	old := &allocation.Allocation{Name: allocation.Name("nw", addr), UID: "old", ResourceVersion: "1",
		Spec: allocation.Spec{Network: "nw", Address: addr.String()}}
	pod := allocation.User{ContainerID: "vm-pod", IfName: "net1", Node: "n1"}
	b, err := addUser(ctx, store, old, pod)
	if !errors.Is(err, errClaimRace) {
		t.Fatalf("addUser on a re-created allocation: %v, %+v; want errClaimRace", err, b)
	}
	if got, _ := store.Get(ctx, old.Name); got == nil || got.Has("nw", pod) {
		t.Fatalf("the claim's pod joined the stranger's allocation: %+v", got)
	}
}
