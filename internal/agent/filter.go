package agent

import (
	"fmt"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// snapLen is what the filter keeps of a frame it passes: all of it, so
// the reader can tell an oversized request (MSG_TRUNC) from a good one.
const snapLen = 0x40000

// What a port's filter passes: the requests of a served guest, the DAD
// claims of a learning one, or both.
type filterKinds struct {
	serve bool // IPv4 UDP to 67, IPv6 UDP to 547, router solicitations
	learn bool // DAD neighbour solicitations for a link-local
}

// portFilter passes only what the port's agent must see, of the frames
// the port received (not ones sent out of it towards the guest):
//   - serve: IPv4 UDP to port 67 (unfragmented), IPv6 UDP to port 547 or
//     ICMPv6 type 133 (router solicitation) right after the IPv6 header;
//   - learn: a DAD neighbour solicitation (ICMPv6 type 135 right after
//     the IPv6 header, hop limit 255, source ::) whose target is in
//     fe80::/64.
//
// The kernel runs it per frame of the port only, so everything else the
// guest sends costs the agent nothing, whatever the number of ports.
func portFilter(k filterKinds) []bpf.Instruction {
	p := &program{}
	p.add(bpf.LoadExtension{Num: bpf.ExtType})
	p.jump(bpf.JumpEqual, unix.PACKET_OUTGOING, "drop", "")
	p.add(bpf.LoadAbsolute{Off: 12, Size: 2})
	if k.serve {
		p.jump(bpf.JumpEqual, unix.ETH_P_IP, "ipv4", "")
	}
	p.jump(bpf.JumpEqual, unix.ETH_P_IPV6, "", "drop")
	p.add(bpf.LoadAbsolute{Off: 20, Size: 1}) // next header
	if k.serve {
		p.jump(bpf.JumpEqual, unix.IPPROTO_UDP, "", "icmpv6")
		p.add(bpf.LoadAbsolute{Off: 56, Size: 2})
		p.jump(bpf.JumpEqual, 547, "accept", "drop")
		p.label("icmpv6")
	}
	p.jump(bpf.JumpEqual, unix.IPPROTO_ICMPV6, "", "drop")
	p.add(bpf.LoadAbsolute{Off: 54, Size: 1}) // ICMPv6 type
	if k.serve {
		p.jump(bpf.JumpEqual, 133, "accept", "")
	}
	if k.learn {
		p.jump(bpf.JumpEqual, 135, "", "drop")
		dadClaim(p)
	}
	p.goTo("drop")
	if k.serve {
		p.label("ipv4")
		// UDP, not a fragment, destination port 67 after the options.
		p.add(bpf.LoadAbsolute{Off: 23, Size: 1})
		p.jump(bpf.JumpEqual, unix.IPPROTO_UDP, "", "drop")
		p.add(bpf.LoadAbsolute{Off: 20, Size: 2})
		p.jump(bpf.JumpBitsSet, 0x3fff, "drop", "")
		p.add(bpf.LoadMemShift{Off: 14})
		p.add(bpf.LoadIndirect{Off: 16, Size: 2})
		p.jump(bpf.JumpEqual, 67, "accept", "drop")
	}
	p.label("accept")
	p.add(bpf.RetConstant{Val: snapLen})
	p.label("drop")
	p.add(bpf.RetConstant{Val: 0})
	return p.assemble()
}

// dadClaim continues after an ICMPv6 type 135: hop limit 255, source ::
// and a target whose first 64 bits are fe80::, or drop; then accept.
func dadClaim(p *program) {
	p.add(bpf.LoadAbsolute{Off: 21, Size: 1}) // hop limit
	p.jump(bpf.JumpEqual, ndHopLimit, "", "drop")
	for off := uint32(22); off < 38; off += 4 { // source address
		p.add(bpf.LoadAbsolute{Off: off, Size: 4})
		p.jump(bpf.JumpEqual, 0, "", "drop")
	}
	p.add(bpf.LoadAbsolute{Off: 62, Size: 4}) // target, after type, code, checksum, reserved
	p.jump(bpf.JumpEqual, 0xfe800000, "", "drop")
	p.add(bpf.LoadAbsolute{Off: 66, Size: 4})
	p.jump(bpf.JumpEqual, 0, "accept", "drop")
}

// program is a classic BPF program whose jumps name labels ("" is the
// next instruction), so variants of a filter need no hand-counted skips.
type program struct {
	steps  []step
	labels map[string]int // label -> index of the next instruction
}

type step struct {
	insn            bpf.Instruction // nil for a jump
	cond            bpf.JumpTest
	val             uint32
	ifTrue, ifFalse string
	always          bool // unconditional jump to ifTrue
}

func (p *program) add(i bpf.Instruction) { p.steps = append(p.steps, step{insn: i}) }

func (p *program) jump(cond bpf.JumpTest, val uint32, ifTrue, ifFalse string) {
	p.steps = append(p.steps, step{cond: cond, val: val, ifTrue: ifTrue, ifFalse: ifFalse})
}

func (p *program) goTo(label string) {
	p.steps = append(p.steps, step{ifTrue: label, always: true})
}

func (p *program) label(name string) {
	if p.labels == nil {
		p.labels = map[string]int{}
	}
	p.labels[name] = len(p.steps)
}

// assemble resolves the labels. A label that is missing or behind its
// jump, or a skip too long for a jump, is a bug in the program: panic.
func (p *program) assemble() []bpf.Instruction {
	skip := func(from int, label string) uint32 {
		if label == "" {
			return 0
		}
		to, ok := p.labels[label]
		if !ok || to <= from || to-from-1 > 255 {
			panic(fmt.Sprintf("filter: bad jump from %d to label %q", from, label))
		}
		return uint32(to - from - 1)
	}
	out := make([]bpf.Instruction, len(p.steps))
	for i, s := range p.steps {
		switch {
		case s.insn != nil:
			out[i] = s.insn
		case s.always:
			out[i] = bpf.Jump{Skip: skip(i, s.ifTrue)}
		default:
			out[i] = bpf.JumpIf{Cond: s.cond, Val: s.val,
				SkipTrue: uint8(skip(i, s.ifTrue)), SkipFalse: uint8(skip(i, s.ifFalse))}
		}
	}
	return out
}

// assembled is the filter as setsockopt(SO_ATTACH_FILTER) takes it.
func assembled(k filterKinds) ([]unix.SockFilter, error) {
	raw, err := bpf.Assemble(portFilter(k))
	if err != nil {
		return nil, err
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}
