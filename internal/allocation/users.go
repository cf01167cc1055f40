package allocation

import apierrors "k8s.io/apimachinery/pkg/api/errors"

// AddUser returns a copy of a with u among its users (unchanged if it
// already is one).
func (a *Allocation) AddUser(u User) *Allocation {
	b := *a
	if a.Has(a.Spec.Network, u) {
		return &b
	}
	b.Spec.Users = append(append([]User{}, a.Spec.Users...), u)
	return &b
}

// RemoveUser returns a copy of a without u.
func (a *Allocation) RemoveUser(u User) *Allocation {
	b := *a
	b.Spec.Users = nil
	for _, x := range a.Spec.Users {
		if AttachmentKey(a.Spec.Network, x.ContainerID, x.IfName) != AttachmentKey(a.Spec.Network, u.ContainerID, u.IfName) {
			b.Spec.Users = append(b.Spec.Users, x)
		}
	}
	return &b
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
