package e2e

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/testenv"
)

// TestWarmPool: creates take booted sandboxes from the pool, which then get
// their own policy, envs and id; the pool refills.
func TestWarmPool(t *testing.T) {
	s := startServer(t, "--warm-pool", "python=2")
	waitPool := func(want int) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			var h struct {
				WarmPool map[string]int `json:"warm_pool"`
			}
			s.must(200, "GET", "/health", nil, &h)
			if h.WarmPool["python"] >= want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("warm pool never reached %d python sandboxes: %v", want, h.WarmPool)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitPool(2)
	// Every pooled boot and its shell warm-up (envd POST /warmup) worked
	// the first time.
	if errs := append(s.logLines("warm pool: boot"), s.logLines("warm up:")...); len(errs) > 0 {
		t.Errorf("warm pool errors: %q", errs)
	}
	open := s.create(map[string]any{"envs": map[string]string{"WHO": "first"}})
	closed := s.create(map[string]any{"allow_internet_access": false, "envs": map[string]string{"WHO": "second"}})
	for id, want := range map[string]string{open: "first", closed: "second"} {
		var audit struct {
			Events []struct {
				Type string          `json:"type"`
				Data json.RawMessage `json:"data"`
			} `json:"events"`
		}
		s.must(200, "GET", "/sandboxes/"+id+"/audit?type=sandbox.created", nil, &audit)
		var d struct {
			Warm bool `json:"warm"`
		}
		if len(audit.Events) != 1 || json.Unmarshal(audit.Events[0].Data, &d) != nil || !d.Warm {
			t.Errorf("sandbox %s was not taken from the warm pool: %s", id, fmtJSON(audit))
		}
		if res := s.run(id, "echo $WHO; hostname"); res.Stdout != want+"\n"+id+"\n" {
			t.Errorf("sandbox %s: envs/hostname = %q", id, res.Stdout)
		}
	}
	s.prober(open).expect("tcp", testenv.ServiceIP.String(), testenv.PortTCPEcho, "OK")
	s.prober(closed).expect("tcp", testenv.ServiceIP.String(), testenv.PortTCPEcho, "TIMEOUT")
	waitPool(2) // refilled
}
