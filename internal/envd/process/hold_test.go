package process

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// counterPattern returns the output of `seq 1 n`.
func counterPattern(n int) []byte {
	var b bytes.Buffer
	for i := 1; i <= n; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// TestLogHoldDeliversAll: a slow holding reader receives every byte of
// much more output than the cap, in order, while the log never retains
// more than the cap plus one entry.
func TestLogHoldDeliversAll(t *testing.T) {
	const limit = 4 << 10
	want := counterPattern(300_000) // ~2 MiB
	l := NewLog(limit)
	h := l.Hold(0)
	defer h.Release()
	go func() {
		rnd := rand.New(rand.NewPCG(1, 2))
		for rest := want; len(rest) > 0; {
			n := min(len(rest), 1+rnd.IntN(2*limit)) // some entries are larger than the cap
			l.Append(Stdout, rest[:n:n])
			rest = rest[n:]
		}
		l.Close()
	}()
	var got bytes.Buffer
	var cursor uint64
	for i := 0; ; i++ {
		entries, dropped, changed, closed := l.Read(cursor, 3)
		if dropped > cursor {
			t.Fatalf("entries after %d were dropped (dropped = %d) under a hold", cursor, dropped)
		}
		if r := l.Retained(); r > limit+2*limit {
			t.Fatalf("retained %d bytes, want at most the cap %d plus one entry", r, limit)
		}
		for _, e := range entries {
			got.Write(e.Data)
			cursor = e.ID
		}
		h.Advance(cursor)
		if len(entries) == 0 {
			if closed {
				break
			}
			<-changed
		}
		if i%50 == 0 {
			time.Sleep(time.Millisecond) // a slow reader
		}
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("held reader got %d bytes, want %d, byte for byte", got.Len(), len(want))
	}
	if l.HoldWaits() == 0 {
		t.Errorf("the producer never waited for the slow reader")
	}
}

// TestLogHoldRelease: releasing the hold (a reader that went away) or
// ReleaseHolds (kill, timeout, shutdown) lets a waiting producer go on,
// which then drops output again as without holds.
func TestLogHoldRelease(t *testing.T) {
	for _, tc := range []struct {
		name    string
		release func(*Log, *Hold)
	}{
		{"release", func(_ *Log, h *Hold) { h.Release() }},
		{"release twice", func(_ *Log, h *Hold) { h.Release(); h.Release() }},
		{"release holds", func(l *Log, _ *Hold) { l.ReleaseHolds() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLog(10)
			h := l.Hold(0)
			l.Append(Stdout, []byte("0123456789"))
			appended := make(chan bool)
			go func() { appended <- l.Append(Stdout, []byte("abc")) }()
			select {
			case <-appended:
				t.Fatal("append past the cap did not wait for the hold")
			case <-time.After(100 * time.Millisecond):
			}
			tc.release(l, h)
			select {
			case ok := <-appended:
				if !ok {
					t.Fatal("append after release = false")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("append still waits after the hold was released")
			}
			if got := string(l.Bytes(Stdout)); got != "3456789abc" {
				t.Errorf("retained %q, want the old drop behaviour %q", got, "3456789abc")
			}
		})
	}
	// After ReleaseHolds, new holds do not hold.
	l := NewLog(4)
	l.ReleaseHolds()
	l.Hold(0)
	for range 10 {
		l.Append(Stdout, []byte("xyz"))
	}
	if l.HoldWaits() != 0 || l.Retained() != 4 {
		t.Errorf("a hold after ReleaseHolds held: %d waits, %d retained", l.HoldWaits(), l.Retained())
	}
}

// TestLogHoldPassiveFollower: a follower without a hold still misses
// output it was too slow for, and sees it as dropped, while the hold
// keeps the producer at the holder's pace.
func TestLogHoldPassiveFollower(t *testing.T) {
	l := NewLog(8)
	h := l.Hold(0)
	for i := range 10 {
		l.Append(Stdout, []byte(fmt.Sprintf("%04d", i))) // 2 entries fit
		if i%2 == 1 {
			h.Advance(l.LastID())
		}
	}
	h.Release()
	entries, dropped, _, _ := l.Read(0, 0)
	if dropped == 0 || len(entries) != 2 || entries[0].ID != 9 {
		t.Errorf("passive follower from 0: %d entries, dropped %d; want the last 2 and a gap", len(entries), dropped)
	}
}

// TestHoldOutputProcess: a process started with HoldOutput and read
// slowly delivers every byte of 64 MiB through a 64 KiB log, byte for
// byte, and blocks on its pipe meanwhile.
func TestHoldOutputProcess(t *testing.T) {
	const lines = 8_000_000 // `seq` output of 68.9 MB
	m := NewManager(Config{OutputLimit: 64 << 10})
	h := start(t, m, "seq 1 "+strconv.Itoa(lines), func(s *Spec) { s.HoldOutput = true })
	hold := h.OutputHold()
	if hold == nil {
		t.Fatal("OutputHold() = nil with HoldOutput")
	}
	defer hold.Release()
	want := counterPattern(lines)
	var got bytes.Buffer
	got.Grow(len(want))
	var cursor uint64
	maxRetained := 0
	for i := 0; ; i++ {
		entries, dropped, changed, closed := h.Output().Read(cursor, 16)
		if dropped > cursor {
			t.Fatalf("output after entry %d was dropped under the hold", cursor)
		}
		for _, e := range entries {
			got.Write(e.Data)
			cursor = e.ID
		}
		hold.Advance(cursor)
		maxRetained = max(maxRetained, h.Output().Retained())
		if len(entries) == 0 {
			if closed {
				break
			}
			select {
			case <-changed:
			case <-time.After(60 * time.Second):
				t.Fatalf("no output for 60s after %d bytes", got.Len())
			}
		}
		if i%200 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	r := wait(t, h)
	if r.ExitCode != 0 {
		t.Errorf("exit code %d, want 0", r.ExitCode)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("held reader got %d bytes, want all %d byte for byte", got.Len(), len(want))
	}
	if maxRetained > 64<<10+readChunk {
		t.Errorf("log retained up to %d bytes, want at most the cap plus one read", maxRetained)
	}
	if h.Output().HoldWaits() == 0 {
		t.Errorf("the process never waited for the slow reader")
	}
}

// heldWriter starts a flood with an output hold that is never advanced
// and waits until the pipe reader is blocked on it.
func heldWriter(t *testing.T, m *Manager, mod func(*Spec)) *Handler {
	t.Helper()
	h := start(t, m, "yes", func(s *Spec) {
		s.HoldOutput = true
		if mod != nil {
			mod(s)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for h.Output().HoldWaits() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the flood never waited for its hold")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return h
}

// TestHoldOutputKill: killing a process blocked on a stalled holding
// reader ends it, and its result becomes final.
func TestHoldOutputKill(t *testing.T) {
	m := NewManager(Config{OutputLimit: 16 << 10})
	h := heldWriter(t, m, nil)
	if !h.Kill() {
		t.Fatal("Kill() = false for a blocked writer")
	}
	r := wait(t, h)
	if !r.Killed || r.Running {
		t.Errorf("result %+v, want killed and finished", r)
	}
	waitDead(t, h.Pid())
}

// TestHoldOutputTimeout: the command timeout fires for a process blocked
// on a stalled holding reader.
func TestHoldOutputTimeout(t *testing.T) {
	m := NewManager(Config{OutputLimit: 16 << 10})
	h := heldWriter(t, m, func(s *Spec) { s.Timeout = time.Second })
	r := wait(t, h)
	if !r.TimedOut || !strings.Contains(r.Error, "timed out") {
		t.Errorf("result %+v, want timed out", r)
	}
}

// TestHoldOutputReleaseResumes: a holder that goes away (Release)
// releases the writer, which runs on with the old drop behaviour.
func TestHoldOutputReleaseResumes(t *testing.T) {
	m := NewManager(Config{OutputLimit: 16 << 10})
	h := start(t, m, "head -c 50000000 /dev/zero; echo end", func(s *Spec) { s.HoldOutput = true })
	deadline := time.Now().Add(20 * time.Second)
	for h.Output().HoldWaits() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the writer never waited for its hold")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.OutputHold().Release()
	r := wait(t, h)
	if r.ExitCode != 0 || !bytes.HasSuffix(r.Stdout, []byte("end\n")) || len(r.Stdout) > 16<<10 {
		t.Errorf("after release: exit %d, %d bytes retained; want exit 0 and the last 16 KiB", r.ExitCode, len(r.Stdout))
	}
}

// TestNoHoldWithoutClient: without HoldOutput (background commands) the
// process never waits for readers.
func TestNoHoldWithoutClient(t *testing.T) {
	m := NewManager(Config{OutputLimit: 16 << 10})
	h := start(t, m, "head -c 20000000 /dev/zero", nil)
	r := wait(t, h)
	if r.ExitCode != 0 || h.OutputHold() != nil || h.Output().HoldWaits() != 0 {
		t.Errorf("exit %d, hold %v, %d waits; want 0, none, 0", r.ExitCode, h.OutputHold(), h.Output().HoldWaits())
	}
}
