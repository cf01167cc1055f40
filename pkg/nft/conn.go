package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
)

// Conn is a netfilter netlink socket, in the network namespace of the
// thread that dialled it.
type Conn struct {
	fd  int
	seq uint32
	buf []byte
}

// recvSize is the receive buffer. The kernel sizes dump replies to the
// largest buffer the socket has read with, capped at 32 KiB, so no
// reply is ever larger than this.
const recvSize = 32 << 10

// Dial opens a socket in the calling thread's network namespace. The
// socket uses blocking system calls rather than the Go netpoller: the
// plugin makes a handful of exchanges and then exits, and a poller would
// cost an epoll instance and a thread hand-off per reply.
func Dial() (*Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("open netfilter netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind netfilter netlink socket: %w", err)
	}
	// Errors then carry only the header of the failed request, not all of it.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	return &Conn{fd: fd, buf: make([]byte, recvSize)}, nil
}

// Close closes the socket. After a commit that freed objects (a deleted
// table, flushed rules), closing waits for the kernel to release them, an
// RCU grace period: callers with other slow work do it before Close.
func (c *Conn) Close() error { return unix.Close(c.fd) }

// Batch is a list of changes committed as one transaction.
type Batch struct {
	msgs  []request
	rules int // AddRule calls so far, to name a refused rule
}

// request is one message: its type, flags, attributes and a description
// for errors.
type request struct {
	typ   uint16 // NFT_MSG_*
	flags uint16
	fam   Family
	attrs attrs
	what  string
}

func (b *Batch) add(typ, flags uint16, fam Family, what string, fill func(*attrs)) {
	var a attrs
	fill(&a)
	b.msgs = append(b.msgs, request{typ: typ, flags: flags, fam: fam, attrs: a, what: what})
}

// AddTable creates the table, or keeps it if it exists. Either way its
// flags become 0: a table someone made dormant is woken up (without the
// attribute the kernel would leave an existing table's flags alone).
func (b *Batch) AddTable(t Table) {
	b.add(unix.NFT_MSG_NEWTABLE, unix.NLM_F_CREATE, t.Family, "add table "+t.Name,
		func(a *attrs) {
			encodeTable(a, t)
			a.u32(unix.NFTA_TABLE_FLAGS, 0)
		})
}

// DelTable deletes the table and everything in it.
func (b *Batch) DelTable(t Table) {
	b.add(unix.NFT_MSG_DELTABLE, 0, t.Family, "delete table "+t.Name,
		func(a *attrs) { encodeTable(a, t) })
}

// AddChain creates the chain, or updates an existing one's policy (its
// hook cannot change).
func (b *Batch) AddChain(c Chain) {
	b.add(unix.NFT_MSG_NEWCHAIN, unix.NLM_F_CREATE, c.Table.Family, "add chain "+c.Name,
		func(a *attrs) { encodeChain(a, c) })
}

// FlushChain deletes all the chain's rules.
func (b *Batch) FlushChain(c Chain) {
	b.add(unix.NFT_MSG_DELRULE, 0, c.Table.Family, "flush chain "+c.Name,
		func(a *attrs) { encodeRuleChain(a, c) })
}

// AddRule appends a rule to the chain.
func (b *Batch) AddRule(c Chain, exprs []Expr) {
	b.rules++
	b.add(unix.NFT_MSG_NEWRULE, unix.NLM_F_CREATE|unix.NLM_F_APPEND, c.Table.Family,
		fmt.Sprintf("add rule %d (of this batch) to chain %s", b.rules, c.Name), func(a *attrs) {
			encodeRuleChain(a, c)
			a.nest(unix.NFTA_RULE_EXPRESSIONS, func(l *attrs) { encodeExprs(l, exprs) })
		})
}

// Commit sends the batch as one transaction: the kernel applies all of it
// or nothing. The error names the first message the kernel refused and
// wraps its errno.
func (c *Conn) Commit(b *Batch) error {
	if len(b.msgs) == 0 {
		return nil
	}
	first := c.seq + 1 // the BATCH_BEGIN
	last := first + uint32(len(b.msgs))
	var out []byte
	out = c.appendMsg(out, unix.NFNL_MSG_BATCH_BEGIN, 0, 0, nil)
	for i, m := range b.msgs {
		flags := m.flags
		if i == len(b.msgs)-1 {
			// The kernel reports every refused message whatever its
			// flags; an acknowledgement of the last one shows that the
			// whole batch was read. Acknowledging each message would
			// overflow the receive buffer with large batches.
			flags |= unix.NLM_F_ACK
		}
		out = c.appendMsg(out, nftType(m.typ), flags, m.fam, m.attrs)
	}
	out = c.appendMsg(out, unix.NFNL_MSG_BATCH_END, 0, 0, nil)
	if err := c.send(out); err != nil {
		return fmt.Errorf("send batch: %w", err)
	}
	// The kernel ran the batch inside sendmsg: every reply is queued.
	acked, errs := false, map[uint32]error{}
	for {
		msgs, err := c.recv(unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			return fmt.Errorf("read batch replies: %w", err)
		}
		for _, m := range msgs {
			if m.typ != unix.NLMSG_ERROR {
				continue
			}
			if err := ackError(m.data); err != nil {
				errs[m.seq] = err
			} else if m.seq == last {
				acked = true
			}
		}
	}
	// A failure of the commit itself (after every message was accepted)
	// comes back with the first message's sequence number, so it is
	// reported as that message's.
	for i, m := range b.msgs {
		if err := errs[first+1+uint32(i)]; err != nil {
			return fmt.Errorf("%s: %w", m.what, err)
		}
	}
	if err := errs[first]; err != nil {
		return fmt.Errorf("begin batch: %w", err)
	}
	if !acked {
		return errors.New("kernel did not acknowledge the batch")
	}
	return nil
}

// nftType is the netlink message type of an nftables message.
func nftType(msg uint16) uint16 { return unix.NFNL_SUBSYS_NFTABLES<<8 | msg }

// appendMsg appends one netlink message: header, nfgenmsg, attributes.
func (c *Conn) appendMsg(out []byte, typ, flags uint16, fam Family, a attrs) []byte {
	c.seq++
	var body attrs
	switch typ {
	case unix.NFNL_MSG_BATCH_BEGIN, unix.NFNL_MSG_BATCH_END:
		// A batch delimiter has no attributes; its nfgenmsg's resource id
		// (big-endian) names the subsystem the batch is for.
		body = attrs{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES}
	default:
		body = attrs{byte(fam), unix.NFNETLINK_V0, 0, 0}
		body = append(body, a...)
	}
	var hdr [unix.SizeofNlMsghdr]byte
	binary.NativeEndian.PutUint32(hdr[0:4], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(hdr[4:6], typ)
	binary.NativeEndian.PutUint16(hdr[6:8], flags|unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(hdr[8:12], c.seq)
	out = append(out, hdr[:]...)
	return append(out, body...)
}

func (c *Conn) send(b []byte) error {
	for {
		err := unix.Sendto(c.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// recv reads one datagram of replies.
func (c *Conn) recv(flags int) ([]message, error) {
	for {
		n, _, rflags, _, err := unix.Recvmsg(c.fd, c.buf, nil, flags)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if rflags&unix.MSG_TRUNC != 0 {
			return nil, fmt.Errorf("netlink reply larger than %d bytes", len(c.buf))
		}
		return parseMessages(c.buf[:n])
	}
}

// message is one netlink message of a reply.
type message struct {
	typ   uint16
	flags uint16
	seq   uint32
	data  []byte // after the header
}

func parseMessages(b []byte) ([]message, error) {
	var out []message
	for len(b) >= unix.SizeofNlMsghdr {
		n := int(binary.NativeEndian.Uint32(b[0:4]))
		if n < unix.SizeofNlMsghdr || n > len(b) {
			return nil, errors.New("truncated netlink message")
		}
		out = append(out, message{typ: binary.NativeEndian.Uint16(b[4:6]), flags: binary.NativeEndian.Uint16(b[6:8]),
			seq: binary.NativeEndian.Uint32(b[8:12]), data: b[unix.SizeofNlMsghdr:n]})
		b = b[min(pad(n), len(b)):]
	}
	return out, nil
}

// ackError decodes an NLMSG_ERROR payload: nil for an acknowledgement.
func ackError(b []byte) error {
	if len(b) < 4 {
		return errors.New("truncated netlink error message")
	}
	if code := int32(binary.NativeEndian.Uint32(b[:4])); code != 0 {
		return unix.Errno(-code)
	}
	return nil
}

// errDumpInterrupted: the objects changed while the kernel dumped them.
var errDumpInterrupted = errors.New("dump interrupted by a concurrent change")

// get sends one request and returns the attributes of each reply message
// (after its nfgenmsg), copied out of the receive buffer. A dump ends with
// NLMSG_DONE, any other request with its acknowledgement; a refused
// request returns the kernel's errno. A dump that a concurrent change
// interrupted is read again, a few times.
func (c *Conn) get(typ uint16, fam Family, dump bool, fill func(*attrs)) ([][]byte, error) {
	for range 3 {
		out, err := c.getOnce(typ, fam, dump, fill)
		if !errors.Is(err, errDumpInterrupted) {
			return out, err
		}
	}
	return nil, errDumpInterrupted
}

func (c *Conn) getOnce(typ uint16, fam Family, dump bool, fill func(*attrs)) ([][]byte, error) {
	var a attrs
	fill(&a)
	flags := uint16(unix.NLM_F_ACK)
	if dump {
		flags = unix.NLM_F_DUMP
	}
	if err := c.send(c.appendMsg(nil, nftType(typ), flags, fam, a)); err != nil {
		return nil, err
	}
	seq := c.seq
	var out [][]byte
	interrupted := false
	for {
		msgs, err := c.recv(0)
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if m.seq != seq {
				continue // a late reply to an earlier request
			}
			interrupted = interrupted || m.flags&unix.NLM_F_DUMP_INTR != 0
			switch m.typ {
			case unix.NLMSG_ERROR:
				if err := ackError(m.data); err != nil || !dump {
					return out, err
				}
			case unix.NLMSG_DONE:
				// Its payload is the dump's status: the kernel may end
				// a dump early with an error.
				if err := ackError(m.data); err != nil {
					return nil, err
				}
				if interrupted {
					return nil, errDumpInterrupted
				}
				return out, nil
			default:
				if len(m.data) < 4 {
					return nil, errors.New("truncated nftables reply")
				}
				out = append(out, slices.Clone(m.data[4:])) // the buffer is reused
			}
		}
	}
}

// GetTable reads a table; the error wraps unix.ENOENT if it is missing.
func (c *Conn) GetTable(t Table) (TableInfo, error) {
	replies, err := c.get(unix.NFT_MSG_GETTABLE, t.Family, false, func(a *attrs) { encodeTable(a, t) })
	if err != nil {
		return TableInfo{}, fmt.Errorf("get table %s: %w", t.Name, err)
	}
	if len(replies) != 1 {
		return TableInfo{}, fmt.Errorf("get table %s: %d replies", t.Name, len(replies))
	}
	return decodeTable(replies[0])
}

// GetChain reads one chain; the error wraps unix.ENOENT if it or its table
// is missing.
func (c *Conn) GetChain(t Table, name string) (Chain, error) {
	replies, err := c.get(unix.NFT_MSG_GETCHAIN, t.Family, false, func(a *attrs) {
		a.str(unix.NFTA_CHAIN_TABLE, t.Name)
		a.str(unix.NFTA_CHAIN_NAME, name)
	})
	if err != nil {
		return Chain{}, fmt.Errorf("get chain %s of table %s: %w", name, t.Name, err)
	}
	if len(replies) != 1 {
		return Chain{}, fmt.Errorf("get chain %s of table %s: %d replies", name, t.Name, len(replies))
	}
	return decodeChain(t, replies[0])
}

// GetRules reads the expressions of a chain's rules, in order.
func (c *Conn) GetRules(ch Chain) ([][]Expr, error) {
	replies, err := c.get(unix.NFT_MSG_GETRULE, ch.Table.Family, true, func(a *attrs) { encodeRuleChain(a, ch) })
	if err != nil {
		return nil, fmt.Errorf("get rules of chain %s: %w", ch.Name, err)
	}
	rules := make([][]Expr, 0, len(replies))
	for _, r := range replies {
		exprs, err := decodeRule(r)
		if err != nil {
			return nil, fmt.Errorf("get rules of chain %s: %w", ch.Name, err)
		}
		rules = append(rules, exprs)
	}
	return rules, nil
}
