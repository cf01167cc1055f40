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
	"github.com/tapbridge/tapbridge-cni/internal/pool"
	"github.com/tapbridge/tapbridge-cni/internal/undo"
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

// TestAllocateFindsEarlierADD: a repeated ADD of an attachment whose
// cached list came back empty finds the earlier ADD's allocation on its
// second candidate (the first was another's then) and makes no second.
func TestAllocateFindsEarlierADD(t *testing.T) {
	ctx := context.Background()
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{allocation.GVR: "IPAllocationList"})
	store := allocation.Store{Dynamic: dyn}
	sets, err := parseSets([][]RawRange{{{Subnet: "10.0.0.0/24"}}})
	if err != nil {
		t.Fatal(err)
	}
	c := &Config{Network: "nw", Sets: sets}
	o := &owner{user: allocation.User{ContainerID: "c1", IfName: "net1", Node: "n1"}}
	var cands []netip.Addr
	sets[0].Candidates(o.seed(c.Network, 0), 3, func(a netip.Addr, _ pool.Range) bool {
		cands = append(cands, a)
		return true
	})
	stranger := allocation.User{ContainerID: "other", IfName: "net1", Node: "n1"}
	for _, a := range []*allocation.Allocation{
		{Spec: allocation.Spec{Network: "nw", Address: cands[0].String(), Users: []allocation.User{stranger}}},
		{Spec: allocation.Spec{Network: "nw", Address: cands[1].String(), Users: []allocation.User{o.user}}},
	} {
		if _, err := store.Create(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	var u undo.Stack
	tk := taker{ctx: ctx, store: store, c: c, o: o, u: &u, want: make([]netip.Addr, 1), look: true}
	got, err := tk.allocate(0)
	if err != nil || got.Addr() != cands[1] {
		t.Fatalf("repeated ADD got %v, %v; want the earlier ADD's %s", got, err, cands[1])
	}
	if all, _ := store.OfNetwork(ctx, "nw"); len(all) != 2 {
		t.Fatalf("%d allocations, want 2 (no second one for the attachment)", len(all))
	}
}

// TestInSet: of two allocations held in a set, the one at the wanted
// address; without one wanted, the first.
func TestInSet(t *testing.T) {
	sets, err := parseSets([][]RawRange{{{Subnet: "10.0.0.0/24"}}, {{Subnet: "10.1.0.0/24"}}})
	if err != nil {
		t.Fatal(err)
	}
	held := []*allocation.Allocation{
		{Spec: allocation.Spec{Address: "10.1.0.9"}},
		{Spec: allocation.Spec{Address: "10.0.0.5"}},
		{Spec: allocation.Spec{Address: "10.0.0.6"}},
	}
	for _, c := range []struct{ want, got string }{{"10.0.0.6", "10.0.0.6"}, {"", "10.0.0.5"}, {"10.0.0.7", "10.0.0.5"}} {
		want, _ := netip.ParseAddr(c.want)
		if a := inSet(sets[0], held, want); a == nil || a.Spec.Address != c.got {
			t.Errorf("want %q: got %v, expected %s", c.want, a, c.got)
		}
	}
	if a := inSet(sets[1], held[1:], netip.Addr{}); a != nil {
		t.Errorf("set 1 without a held address: got %v", a)
	}
}
