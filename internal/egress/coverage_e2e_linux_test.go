package egress

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/testenv"
)

// TestE2ECoverage (issue 24) sends every location, framing and encoding of
// covCases from a real slot (its web traffic redirected by the firewall)
// over HTTPS with HTTP/1.1 and HTTP/2 and over plain HTTP, and asserts on
// the bytes the uplink received.
func TestE2ECoverage(t *testing.T) {
	ie := newICE2E(t)
	ie.setSecurity(t, covPII)
	for _, tc := range []struct {
		name, base string
		h2         bool
	}{
		{"https h1", "https://api.example.test", false},
		{"https h2", "https://api.example.test", true},
		{"http", "http://api.example.test", false},
	} {
		c := ie.client(tc.h2, nil)
		for _, cc := range covCases(t) {
			t.Run(tc.name+"/"+cc.name, func(t *testing.T) {
				ie.n.Reset()
				ie.drain()
				resp, err := c.Do(cc.build(tc.base))
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				if tc.h2 && resp.ProtoMajor != 2 {
					t.Errorf("sandbox spoke %s, want HTTP/2", resp.Proto)
				}
				r := ie.n.WaitRecords(5*time.Second, func(r testenv.Records) bool { return len(r.HTTP) > 0 })
				if len(r.HTTP) != 1 {
					t.Fatalf("uplink got %d requests, want 1", len(r.HTTP))
				}
				up := r.HTTP[0]
				path, query, _ := strings.Cut(up.URI, "?")
				cc.check(t, recorded{Method: up.Method, Host: up.Host, Path: path, Query: query, Header: up.Header, Body: up.Body})
			})
		}
	}
}

// TestE2EStreamedUpload (issue 24): a 1 GiB chunked upload over HTTPS from
// the slot, PII planted every MiB across window ends, is streamed through
// the stages: it completes, the uplink gets every byte with no planted
// value, and the test process (sandbox client, proxy and uplink together)
// never holds more than a small fraction of it.
func TestE2EStreamedUpload(t *testing.T) {
	ie := newICE2E(t)
	ie.setSecurity(t, covPII)
	var mu sync.Mutex
	var got sinkResult
	ie.n.HandleHTTP("/sink", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res := sinkResult{}
		buf := make([]byte, 64<<10)
		var tail []byte
		for {
			n, err := r.Body.Read(buf)
			res.Bytes += int64(n)
			win := append(tail, buf[:n]...)
			for _, s := range sinkSecrets {
				if bytes.Contains(win, []byte(s)) {
					res.Leaked = append(res.Leaked, s)
				}
			}
			res.Tokens += bytes.Count(buf[:n], []byte("[REDACTED_"))
			tail = append([]byte(nil), win[max(0, len(win)-64):]...)
			if err != nil {
				if err != io.EOF {
					res.Err = err
				}
				break
			}
		}
		mu.Lock()
		got = res
		mu.Unlock()
		fmt.Fprintf(w, "%d", res.Bytes)
	}))
	const size = 1 << 30
	body := &piiStream{size: size}
	req, _ := http.NewRequest("POST", "https://api.example.test/sink", body)
	req.ContentLength = -1
	req.Header.Set("Content-Type", "text/plain")
	defer debug.SetGCPercent(debug.SetGCPercent(20)) // the heap shows what is live
	runtime.GC()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	var peak atomic.Uint64
	stop := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	c := ie.client(false, nil)
	c.Timeout = 15 * time.Minute
	start := time.Now()
	resp, err := c.Do(req)
	close(stop)
	if err != nil {
		select {
		case ev := <-ie.http:
			t.Logf("event %+v", ev)
		case <-time.After(2 * time.Second):
		}
		t.Fatal(err)
	}
	reply, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("1 GiB streamed in %v; peak heap %d MiB (%d MiB before); %d tokens", time.Since(start), peak.Load()>>20, ms0.HeapInuse>>20, got.Tokens)
	if resp.StatusCode != 200 || got.Bytes < size || got.Err != nil {
		t.Errorf("status %d (%s), uplink read %d of %d bytes, err %v", resp.StatusCode, reply, got.Bytes, int64(size), got.Err)
	}
	if len(got.Leaked) > 0 || got.Tokens < body.planted*9/10 {
		t.Errorf("leaked %v; %d tokens for %d planted values", got.Leaked, got.Tokens, body.planted)
	}
	// Far below the body (the uplink's recorder alone keeps 16 MiB of it,
	// and HeapInuse counts garbage not yet collected).
	if p := peak.Load(); p > ms0.HeapInuse+128<<20 {
		t.Errorf("peak heap %d MiB (%d MiB before) while streaming 1 GiB", p>>20, ms0.HeapInuse>>20)
	}
	ev := ie.httpEvent(t)
	if ev.PII["ssn"] < body.planted/2*9/10 {
		t.Errorf("event PII %v for %d planted", ev.PII, body.planted)
	}
}
