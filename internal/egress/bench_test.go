package egress

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// benchUpstream serves one transfer per connection after the request
// header: "down" writes size bytes, "up" reads to EOF, then closes.
func benchUpstream(b *testing.B, down bool, size int64) uint16 {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	zero := make([]byte, 256<<10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for { // request header
					line, err := br.ReadSlice('\n')
					if err != nil || len(line) <= 2 {
						break
					}
				}
				if down {
					for left := size; left > 0; {
						n, err := c.Write(zero[:min(int64(len(zero)), left)])
						if err != nil {
							return
						}
						left -= int64(n)
					}
					return
				}
				io.Copy(io.Discard, br)
				c.Write([]byte("ok"))
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String()).Port()
}

// BenchmarkSplice reports the throughput of one TCP stream through the
// proxy (splice path) and of a direct connection in the same run, and
// their ratio (1.0 = no cost).
func BenchmarkSplice(b *testing.B) {
	const size = 64 << 20
	for _, down := range []bool{true, false} {
		b.Run(map[bool]string{true: "download", false: "upload"}[down], func(b *testing.B) {
			port := benchUpstream(b, down, size)
			h := newHarness(b, Config{Ports: []uint16{port}}, mustParse(b, []string{"api.example.test"}, []string{"*"}))
			h.res.set("api.example.test", "127.0.0.1")
			h.setDst(fmt.Sprintf("198.51.100.10:%d", port))
			go func() { // drain events
				for range h.events {
				}
			}()
			payload := make([]byte, 256<<10)
			transfer := func(addr string) time.Duration {
				start := time.Now()
				c, err := net.Dial("tcp4", addr)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				if _, err := c.Write(get("api.example.test")); err != nil {
					b.Fatal(err)
				}
				var n int64
				if down {
					n, err = io.Copy(io.Discard, c)
				} else {
					for n < size {
						k, err := c.Write(payload)
						if err != nil {
							b.Fatal(err)
						}
						n += int64(k)
					}
					c.(*net.TCPConn).CloseWrite()
					_, err = io.ReadAll(c)
				}
				if err != nil || n != size {
					b.Fatalf("transfer via %s: %d bytes, %v", addr, n, err)
				}
				return time.Since(start)
			}
			direct := fmt.Sprintf("127.0.0.1:%d", port)
			var dt, pt time.Duration
			for b.Loop() {
				dt += transfer(direct)
				pt += transfer(h.addr)
			}
			mb := float64(size) * float64(b.N) / 1e6
			b.ReportMetric(mb/dt.Seconds(), "direct-MB/s")
			b.ReportMetric(mb/pt.Seconds(), "proxy-MB/s")
			b.ReportMetric(dt.Seconds()/pt.Seconds(), "ratio")
		})
	}
}
