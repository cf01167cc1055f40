package kube

// PIDs are the process IDs of kube-apiserver and etcd (0 for one not
// started), for a caller that reads their CPU time from /proc, as the
// benchmark does around a batch of IPAM calls.
func (c *Cluster) PIDs() (apiserver, etcd int) {
	pid := func(p *process) int {
		if p == nil || p.cmd.Process == nil {
			return 0
		}
		return p.cmd.Process.Pid
	}
	return pid(c.api), pid(c.etcd)
}
