package flowlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Config configures a listener.
type Config struct {
	// Group is the NFLOG group of the log rules (network.Config.LogGroup).
	// It must not be zero, and only one socket per namespace can bind it
	// (the kernel refuses a second with EPERM).
	Group uint16
	// NetNS is the path of the network namespace the table lives in (the
	// server's, network.Config.HostNetNS). Empty means the namespace of
	// the calling thread.
	NetNS string
	// OnEvent receives every event, one at a time, on the listener's
	// goroutine. While it runs, messages queue in the socket; if the queue
	// overflows the kernel drops them (counted in Logf output).
	OnEvent func(Event)
	// Logf logs dropped and unparsable messages; nil discards them.
	Logf func(format string, args ...any)
}

// CopyRange is how many bytes of each packet the listener asks for: enough
// for an IPv4 header with options or an IPv6 header with a few extension
// headers, plus the ports.
const CopyRange = 128

// nfnetlink_log message and configuration constants (nfnetlink_log.h).
const (
	msgPacket = 0 // NFULNL_MSG_PACKET
	msgConfig = 1 // NFULNL_MSG_CONFIG

	cfgAttrCmd     = 1 // NFULA_CFG_CMD
	cfgAttrMode    = 2 // NFULA_CFG_MODE
	cfgAttrQThresh = 5 // NFULA_CFG_QTHRESH

	cmdBind   = 1 // NFULNL_CFG_CMD_BIND
	cmdPFBind = 3 // NFULNL_CFG_CMD_PF_BIND

	copyPacket = 2 // NFULNL_COPY_PACKET
)

// Listener reads one NFLOG group. Close stops it.
type Listener struct {
	conn      *netlink.Conn
	cfg       Config
	done      chan struct{}
	closeOnce sync.Once
	closing   chan struct{}
	stopCtx   func() bool
	err       error // set by the reader before done is closed
}

// Listen opens an nfnetlink_log socket in cfg.NetNS, binds it to cfg.Group
// with packet copy mode (CopyRange bytes) and delivers events to
// cfg.OnEvent until ctx is done or Close is called. Binding errors (EPERM:
// another socket has the group) are returned.
func Listen(ctx context.Context, cfg Config) (*Listener, error) {
	if cfg.Group == 0 {
		return nil, errors.New("flowlog: group 0")
	}
	if cfg.OnEvent == nil {
		return nil, errors.New("flowlog: nil OnEvent")
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	nc := &netlink.Config{}
	if cfg.NetNS != "" {
		fd, err := unix.Open(cfg.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("flowlog: open netns %s: %w", cfg.NetNS, err)
		}
		defer unix.Close(fd)
		nc.NetNS = fd
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, nc)
	if err != nil {
		return nil, fmt.Errorf("flowlog: dial nfnetlink in %q: %w", cfg.NetNS, err)
	}
	l := &Listener{conn: conn, cfg: cfg, done: make(chan struct{}), closing: make(chan struct{})}
	if err := l.bind(); err != nil {
		conn.Close()
		return nil, err
	}
	// A larger buffer rides out bursts while OnEvent runs; best effort.
	_ = conn.SetReadBuffer(1 << 20)
	l.stopCtx = context.AfterFunc(ctx, l.shutdown)
	go l.read()
	return l, nil
}

// bind registers the logger for IPv4 and IPv6 (a no-op since Linux 3.17,
// kept for older kernels), then binds the group, asks for packet copies of
// CopyRange bytes and a queue threshold of 1 (every message is sent at
// once) in the same request.
func (l *Listener) bind() error {
	for _, pf := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := l.config(pf, 0, attr{cfgAttrCmd, []byte{cmdPFBind}}); err != nil {
			return fmt.Errorf("flowlog: bind family %d: %w", pf, err)
		}
	}
	mode := binary.BigEndian.AppendUint32(nil, CopyRange)
	mode = append(mode, copyPacket, 0)
	err := l.config(unix.AF_UNSPEC, l.cfg.Group,
		attr{cfgAttrCmd, []byte{cmdBind}},
		attr{cfgAttrMode, mode},
		attr{cfgAttrQThresh, binary.BigEndian.AppendUint32(nil, 1)})
	if err != nil {
		return fmt.Errorf("flowlog: bind group %d: %w", l.cfg.Group, err)
	}
	return nil
}

type attr struct {
	typ  uint16
	data []byte
}

// config sends one NFULNL_MSG_CONFIG request and waits for its ack. Packet
// messages that arrive first (the group is bound by then) are delivered.
func (l *Listener) config(family uint8, group uint16, attrs ...attr) error {
	ae := netlink.NewAttributeEncoder()
	for _, a := range attrs {
		ae.Bytes(a.typ, a.data)
	}
	b, err := ae.Encode()
	if err != nil {
		return err
	}
	body := append([]byte{family, unix.NFNETLINK_V0, byte(group >> 8), byte(group)}, b...)
	req, err := l.conn.Send(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8 | msgConfig),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: body,
	})
	if err != nil {
		return err
	}
	// Receive returns a NACK as an error; an ACK is an Error message with
	// errno 0 and our sequence number.
	if err := l.conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	defer l.conn.SetReadDeadline(time.Time{})
	for {
		msgs, err := l.conn.Receive()
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type == netlink.Error && m.Header.Sequence == req.Header.Sequence {
				return nil
			}
			l.handle(m)
		}
	}
}

func (l *Listener) read() {
	defer close(l.done)
	var dropped uint64
	for {
		msgs, err := l.conn.Receive()
		if err != nil {
			select {
			case <-l.closing:
				return
			default:
			}
			if errors.Is(err, unix.ENOBUFS) {
				dropped++
				l.cfg.Logf("flowlog: group %d: socket buffer overflowed, kernel dropped log messages (%d overflows)", l.cfg.Group, dropped)
				continue
			}
			l.err = fmt.Errorf("flowlog: receive: %w", err)
			l.cfg.Logf("%v", l.err)
			return
		}
		for _, m := range msgs {
			l.handle(m)
		}
	}
}

func (l *Listener) handle(m netlink.Message) {
	if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8|msgPacket) {
		return
	}
	ev, err := ParseMessage(m.Data, time.Now())
	if err != nil {
		if !errors.Is(err, ErrNotOurs) {
			l.cfg.Logf("flowlog: group %d: %v", l.cfg.Group, err)
		}
		return
	}
	l.cfg.OnEvent(ev)
}

func (l *Listener) shutdown() {
	l.closeOnce.Do(func() {
		close(l.closing)
		l.conn.Close() // unblocks Receive; the kernel unbinds the group
	})
}

// Close stops the listener and waits until OnEvent is no longer called.
// It returns the error that stopped the listener early, if any. It must
// not be called from OnEvent.
func (l *Listener) Close() error {
	l.stopCtx()
	l.shutdown()
	<-l.done
	return l.err
}
