package server

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"syscall"
	"time"

	"github.com/declaw/declaw/internal/network/flowlog"
)

// defaultFlowLogGroup is the NFLOG group the server's nftables rules log
// connection decisions to (groups are per network namespace), for the
// default net prefix.
const defaultFlowLogGroup = 41237

// flowLogGroup returns the NFLOG group of the server whose netns, veths and
// table are named with prefix. Servers with different prefixes can share a
// network namespace (a README server and "declaw bench --local", tests), and
// one group has one listener, so each prefix gets its own group.
func flowLogGroup(prefix string) uint16 {
	if prefix == "" || prefix == "declaw" {
		return defaultFlowLogGroup
	}
	h := fnv.New32a()
	h.Write([]byte(prefix))
	return uint16(42000 + h.Sum32()%16000)
}

// flowAuditor turns the firewall's connection decisions into audit events
// (network.allowed / network.blocked). Events are queued so the netlink
// socket is never backed up by store writes; a blocked TCP connect's SYN
// retransmissions are reported once.
type flowAuditor struct {
	ln     *flowlog.Listener
	events chan flowlog.Event
	done   chan struct{}
}

func startFlowAuditor(ctx context.Context, group uint16, logf func(string, ...any), owner func(slot int) string, audit func(id, typ string, data any)) (*flowAuditor, error) {
	fa := &flowAuditor{events: make(chan flowlog.Event, 4096), done: make(chan struct{})}
	ln, err := flowlog.Listen(ctx, flowlog.Config{Group: group, Logf: logf, OnEvent: func(ev flowlog.Event) {
		select {
		case fa.events <- ev:
		default: // the auditor is behind: the event is lost, the drop still happened
		}
	}})
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EBUSY) {
		return nil, fmt.Errorf("flow log: NFLOG group %d is taken (another declaw server with the same --net-prefix in this network namespace?): %w", group, err)
	}
	if err != nil {
		return nil, fmt.Errorf("flow log: %w", err)
	}
	fa.ln = ln
	go func() {
		defer close(fa.done)
		recent := map[string]time.Time{}
		for ev := range fa.events {
			id := owner(ev.SlotIndex)
			if id == "" {
				continue // a free or warm-pool slot
			}
			key := fmt.Sprintf("%d %s %s %s %s", ev.SlotIndex, ev.Decision, ev.Proto, ev.Src, ev.Dst)
			if t, ok := recent[key]; ok && ev.Time.Sub(t) < 5*time.Second {
				continue
			}
			recent[key] = ev.Time
			if len(recent) > 10000 {
				clear(recent)
			}
			typ := "network.allowed"
			if ev.Decision != flowlog.Allow {
				typ = "network.blocked"
			}
			audit(id, typ, map[string]any{"proto": ev.Proto.String(), "src": ev.Src.String(), "dst": ev.Dst.String(), "rule": ev.Reason})
		}
	}()
	return fa, nil
}

func (fa *flowAuditor) Close() error {
	err := fa.ln.Close()
	close(fa.events)
	<-fa.done
	return err
}
