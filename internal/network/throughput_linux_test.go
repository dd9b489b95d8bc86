package network

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/network/flowlog"
	"github.com/declaw/declaw/internal/testenv"
)

// streamChunk is what one benchmark iteration sends through each slot.
const streamChunk = 4 << 20

// BenchmarkVethThroughput measures a TCP stream from a slot, through its
// veth, the forward chain and masquerading, to a sink in the uplink: once
// with an allow-all policy and no log rules, once with logging on and a
// policy of 1000 allowed and 1000 denied CIDRs that the stream's
// destination is in neither of (so every packet goes through both set
// lookups before the final accept). Each iteration sends one chunk through
// each slot, in alternating order, so both see the same machine; it reports
// both rates and the ratio policy/allow-all (1: the policy costs nothing)
// as the median of the iterations' ratios, which a busy machine disturbs
// far less than the ratio of the totals (also reported).
func BenchmarkVethThroughput(b *testing.B) {
	n := testenv.NewNet(b)
	sinkAddr := netip.AddrPortFrom(testenv.ServiceIP, 5201)
	sink, err := n.Uplink.Listen("tcp4", sinkAddr.String())
	if err != nil {
		b.Fatalf("listen in uplink: %v", err)
	}
	b.Cleanup(func() { sink.Close() })
	go serveSink(sink)

	// Two Managers in test-host, on two halves of the sandbox range.
	tag := fmt.Sprintf("%04x", rand.Uint32()&0xffff)
	plain := benchManager(b, n, Config{Prefix: "tp" + tag, CIDR: netip.MustParsePrefix("10.200.0.0/24"), PoolSize: -1})
	logged := benchManager(b, n, Config{Prefix: "tl" + tag, CIDR: netip.MustParsePrefix("10.200.1.0/24"), PoolSize: -1, LogGroup: 7})
	var events atomic.Int64
	l, err := flowlog.Listen(b.Context(), flowlog.Config{Group: 7, NetNS: n.Host.Path, OnEvent: func(flowlog.Event) { events.Add(1) }})
	if err != nil {
		b.Fatalf("flowlog.Listen: %v", err)
	}
	b.Cleanup(func() { l.Close() })

	allowAll := benchSlot(b, plain, Policy{})
	big := Policy{}
	for i := range 1000 {
		// 100.64.0.0/10 and 172.16.0.0/12: far from the uplink's addresses.
		big.AllowOut = append(big.AllowOut, fmt.Sprintf("100.%d.%d.0/24", 64+i/256, i%256))
		big.DenyOut = append(big.DenyOut, fmt.Sprintf("172.%d.%d.0/24", 16+i/256, i%256))
	}
	policy := benchSlot(b, logged, big)

	conns := make([]net.Conn, 2)
	for i, s := range []*Slot{allowAll, policy} {
		c, err := testenv.Netns{Name: s.NetNS, Path: s.NetNSPath}.DialContext(b.Context(), "tcp4", sinkAddr.String())
		if err != nil {
			b.Fatalf("dial sink from slot %d: %v", s.Index, err)
		}
		b.Cleanup(func() { c.Close() })
		conns[i] = c
	}
	buf := make([]byte, streamChunk)
	var took [2]time.Duration
	var ratios []float64
	b.SetBytes(2 * streamChunk)
	iter := 0
	for b.Loop() {
		var pair [2]time.Duration
		for j := range 2 {
			i := (iter + j) % 2
			start := time.Now()
			if err := sendChunk(conns[i], buf); err != nil {
				b.Fatalf("stream %d: %v", i, err)
			}
			pair[i] = time.Since(start)
			took[i] += pair[i]
		}
		ratios = append(ratios, pair[0].Seconds()/pair[1].Seconds())
		iter++
	}
	slices.Sort(ratios)
	rate := func(d time.Duration) float64 { return float64(b.N) * streamChunk / 1e6 / d.Seconds() }
	b.ReportMetric(rate(took[0]), "allow-all-MB/s")
	b.ReportMetric(rate(took[1]), "policy+log-MB/s")
	b.ReportMetric(rate(took[1])/rate(took[0]), "total-ratio")
	b.ReportMetric(ratios[len(ratios)/2], "policy/allow-all")
	b.Logf("flowlog events during the benchmark: %d (new connections only)", events.Load())
}

// serveSink reads what each connection sends: an 8-byte length, then that
// many bytes, answered by one byte, so a sender knows its data arrived.
func serveSink(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var hdr [8]byte
			for {
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint64(hdr[:]))); err != nil {
					return
				}
				if _, err := c.Write([]byte{1}); err != nil {
					return
				}
			}
		}()
	}
}

// sendChunk sends buf and waits for the sink's acknowledgement.
func sendChunk(c net.Conn, buf []byte) error {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(binary.BigEndian.AppendUint64(nil, uint64(len(buf)))); err != nil {
		return err
	}
	if _, err := c.Write(buf); err != nil {
		return err
	}
	_, err := io.ReadFull(c, make([]byte, 1))
	return err
}

func benchManager(b *testing.B, n *testenv.Net, cfg Config) *Manager {
	b.Helper()
	cfg.HostNetNS = n.Host.Path
	m, err := New(b.Context(), cfg)
	if err != nil {
		b.Fatalf("New(%s): %v", cfg.Prefix, err)
	}
	b.Cleanup(func() { m.Close(context.Background()) })
	return m
}

func benchSlot(b *testing.B, m *Manager, p Policy) *Slot {
	b.Helper()
	s, err := m.Acquire(b.Context())
	if err != nil {
		b.Fatalf("Acquire: %v", err)
	}
	if err := m.Apply(b.Context(), s, p); err != nil {
		b.Fatalf("Apply: %v", err)
	}
	return s
}

// BenchmarkAcquireRatio is BenchmarkAcquire with both ways interleaved in
// each iteration, so it can report the ratio: per-sandbox network setup
// time when a slot is taken from a warm pool versus created on demand.
func BenchmarkAcquireRatio(b *testing.B) {
	n := testenv.NewNet(b)
	tag := fmt.Sprintf("%04x", rand.Uint32()&0xffff)
	pooled := benchManager(b, n, Config{Prefix: "ap" + tag, CIDR: netip.MustParsePrefix("10.200.0.0/24"), PoolSize: 1})
	fresh := benchManager(b, n, Config{Prefix: "af" + tag, CIDR: netip.MustParsePrefix("10.200.1.0/24"), PoolSize: -1})
	var took [2]time.Duration
	for b.Loop() {
		for i, m := range []*Manager{pooled, fresh} {
			b.StopTimer()
			if m == pooled {
				waitFor(b, func() bool { return m.readyCount() == 1 })
			}
			b.StartTimer()
			start := time.Now()
			s, err := m.Acquire(b.Context())
			if err != nil {
				b.Fatalf("Acquire: %v", err)
			}
			took[i] += time.Since(start)
			b.StopTimer()
			if err := m.Release(b.Context(), s); err != nil {
				b.Fatalf("Release: %v", err)
			}
			b.StartTimer()
		}
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(per(took[0]), "pool-µs/acquire")
	b.ReportMetric(per(took[1]), "fresh-µs/acquire")
	b.ReportMetric(per(took[1])/per(took[0]), "fresh/pool")
}
