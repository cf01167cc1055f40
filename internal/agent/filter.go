package agent

import (
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// snapLen is what the filter keeps of a frame it passes: all of it, so
// the reader can tell an oversized request (MSG_TRUNC) from a good one.
const snapLen = 0x40000

// requestFilter passes only what a guest's port must answer: frames the
// port received (not ones sent out of it towards the guest) carrying IPv4
// UDP to port 67 (unfragmented), IPv6 UDP to port 547 or ICMPv6 type 133
// (router solicitation) right after the IPv6 header. The kernel runs it
// per frame of the port only, so everything else the guest sends costs
// the agent nothing, whatever the number of ports.
func requestFilter() []bpf.Instruction {
	const (
		accept = snapLen
		drop   = 0
	)
	return []bpf.Instruction{
		/* 0 */ bpf.LoadExtension{Num: bpf.ExtType},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipTrue: 18},
		/* 2 */ bpf.LoadAbsolute{Off: 12, Size: 2},
		/* 3 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_IP, SkipFalse: 7},
		// IPv4: UDP, not a fragment, destination port 67 after the options.
		/* 4 */ bpf.LoadAbsolute{Off: 23, Size: 1},
		/* 5 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_UDP, SkipFalse: 14},
		/* 6 */ bpf.LoadAbsolute{Off: 20, Size: 2},
		/* 7 */ bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x3fff, SkipTrue: 12},
		/* 8 */ bpf.LoadMemShift{Off: 14},
		/* 9 */ bpf.LoadIndirect{Off: 16, Size: 2},
		/* 10 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 67, SkipTrue: 8, SkipFalse: 9},
		/* 11 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_IPV6, SkipFalse: 8},
		// IPv6: UDP to 547, or ICMPv6 router solicitation.
		/* 12 */ bpf.LoadAbsolute{Off: 20, Size: 1},
		/* 13 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_UDP, SkipFalse: 2},
		/* 14 */ bpf.LoadAbsolute{Off: 56, Size: 2},
		/* 15 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 547, SkipTrue: 3, SkipFalse: 4},
		/* 16 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_ICMPV6, SkipFalse: 3},
		/* 17 */ bpf.LoadAbsolute{Off: 54, Size: 1},
		/* 18 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 133, SkipFalse: 1},
		/* 19 */ bpf.RetConstant{Val: accept},
		/* 20 */ bpf.RetConstant{Val: drop},
	}
}

// assembled is the filter as setsockopt(SO_ATTACH_FILTER) takes it.
func assembled() ([]unix.SockFilter, error) {
	raw, err := bpf.Assemble(requestFilter())
	if err != nil {
		return nil, err
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}
