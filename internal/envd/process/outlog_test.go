package process

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/envdapi"
)

func TestLogCap(t *testing.T) {
	tests := []struct {
		name   string
		limit  int
		chunks []string
		want   string
	}{
		{"under", 10, []string{"abc", "def"}, "abcdef"},
		{"exact", 6, []string{"abc", "def"}, "abcdef"},
		{"drop whole", 3, []string{"abc", "def"}, "def"},
		{"trim partial", 4, []string{"abc", "def"}, "cdef"},
		{"single big", 2, []string{"abcdef"}, "ef"},
		{"many", 5, []string{"1", "2", "3", "4", "5", "6", "7"}, "34567"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLog(tt.limit)
			var total int64
			for _, c := range tt.chunks {
				l.Append(Stdout, []byte(c))
				total += int64(len(c))
			}
			if got := string(l.Bytes(Stdout)); got != tt.want {
				t.Errorf("Bytes(Stdout) = %q, want %q", got, tt.want)
			}
			ret, tot := l.Stats(Stdout)
			if ret != len(tt.want) || tot != total {
				t.Errorf("Stats(Stdout) = %d, %d, want %d, %d", ret, tot, len(tt.want), total)
			}
			if got := l.Bytes(Stderr); len(got) != 0 {
				t.Errorf("Bytes(Stderr) = %q, want empty", got)
			}
		})
	}
}

func TestLogCapPerStream(t *testing.T) {
	l := NewLog(4)
	l.Append(Stderr, []byte("err!"))
	for i := 0; i < 100; i++ {
		l.Append(Stdout, []byte("out"))
	}
	if got := string(l.Bytes(Stderr)); got != "err!" {
		t.Errorf("stdout flood evicted stderr: Bytes(Stderr) = %q, want %q", got, "err!")
	}
	if got := string(l.Bytes(Stdout)); got != "tout" {
		t.Errorf("Bytes(Stdout) = %q, want %q", got, "tout")
	}
}

func TestLogSinceOrder(t *testing.T) {
	l := NewLog(1 << 20)
	l.Append(Stdout, []byte("a"))
	l.Append(Stderr, []byte("b"))
	l.Append(Stdout, []byte("c"))
	l.Append(Stderr, []byte("d"))
	tests := []struct {
		after uint64
		max   int
		want  string
	}{
		{0, 0, "1a 2b 3c 4d "},
		{1, 0, "2b 3c 4d "},
		{2, 1, "3c "},
		{4, 0, ""},
		{99, 0, ""},
	}
	for _, tt := range tests {
		got, _, _ := l.Since(tt.after, tt.max)
		var b bytes.Buffer
		for _, e := range got {
			fmt.Fprintf(&b, "%d%s ", e.ID, e.Data)
		}
		if b.String() != tt.want {
			t.Errorf("Since(%d, %d) = %q, want %q", tt.after, tt.max, b.String(), tt.want)
		}
	}
}

func TestLogFollow(t *testing.T) {
	l := NewLog(1 << 20)
	const n = 1000
	var wg sync.WaitGroup
	wg.Add(1)
	var got bytes.Buffer
	go func() {
		defer wg.Done()
		var last uint64
		for {
			es, changed, closed := l.Since(last, 0)
			for _, e := range es {
				got.Write(e.Data)
				last = e.ID
			}
			if len(es) > 0 {
				continue
			}
			if closed {
				return
			}
			<-changed
		}
	}()
	var want bytes.Buffer
	for i := 0; i < n; i++ {
		s := fmt.Sprintf("%d,", i)
		want.WriteString(s)
		l.Append(Stdout, []byte(s))
	}
	l.Close()
	if l.Append(Stdout, []byte("after close")) {
		t.Error("Append after Close = true, want false")
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("follower did not finish after Close")
	}
	if got.String() != want.String() {
		t.Errorf("follower read %d bytes, want %d", got.Len(), want.Len())
	}
}

func TestLogCompacts(t *testing.T) {
	l := NewLog(10)
	for i := 0; i < 10000; i++ {
		l.Append(Stdout, []byte("x"))
	}
	sl := &l.streams[Stdout]
	if len(sl.entries) > 200 {
		t.Errorf("entries slice grew to %d with 10 retained: not compacted", len(sl.entries))
	}
}

func TestLogReadDropped(t *testing.T) {
	l := NewLog(4)
	l.Append(Stdout, []byte("ab")) // 1
	l.Append(Stderr, []byte("E"))  // 2
	l.Append(Stdout, []byte("cd")) // 3
	if _, dropped, _, _ := l.Read(0, 0); dropped != 0 {
		t.Fatalf("Read(0) dropped = %d before the cap was reached, want 0", dropped)
	}
	l.Append(Stdout, []byte("e")) // 4: drops 1 byte of entry 1
	tests := []struct {
		after       uint64
		wantDropped uint64
		wantLost    bool
		want        string
	}{
		{0, 1, true, "1b 2E 3cd 4e "},
		{1, 1, false, "2E 3cd 4e "},
		{3, 1, false, "4e "},
	}
	for _, tt := range tests {
		es, dropped, _, _ := l.Read(tt.after, 0)
		var b bytes.Buffer
		for _, e := range es {
			fmt.Fprintf(&b, "%d%s ", e.ID, e.Data)
		}
		if b.String() != tt.want || dropped != tt.wantDropped || (dropped > tt.after) != tt.wantLost {
			t.Errorf("Read(%d) = %q, dropped %d; want %q, dropped %d (lost %v)", tt.after, b.String(), dropped, tt.want, tt.wantDropped, tt.wantLost)
		}
	}
	l.Append(Stdout, []byte("fgh")) // 5: drops the rest of 1 and all of 3
	if es, dropped, _, _ := l.Read(2, 0); dropped != 3 || len(es) != 2 || es[0].ID != 4 {
		t.Errorf("Read(2) = %v, dropped %d; want entries 4, 5 and dropped 3", es, dropped)
	}
	if got := string(l.Bytes(Stderr)); got != "E" {
		t.Errorf("stderr = %q, want E", got)
	}
}

func TestLogTail(t *testing.T) {
	l := NewLog(100)
	for _, c := range []string{"aaaa", "bb", "ccc", "d"} { // ids 1..4
		l.Append(PtyStream, []byte(c))
	}
	tests := []struct {
		max  int
		want string
	}{
		{0, ""}, {1, "d"}, {3, "d"}, {4, "cccd"}, {6, "bbcccd"}, {9, "bbcccd"}, {10, "aaaabbcccd"}, {1000, "aaaabbcccd"},
	}
	for _, tt := range tests {
		es, _, _, _ := l.Read(l.TailCursor(PtyStream, tt.max), 0)
		var b bytes.Buffer
		for _, e := range es {
			b.Write(e.Data)
		}
		if b.String() != tt.want {
			t.Errorf("tail of %d bytes = %q, want %q", tt.max, b.String(), tt.want)
		}
	}
	// A partly dropped entry is never part of the tail.
	small := NewLog(5)
	small.Append(PtyStream, []byte("xyz"))
	small.Append(PtyStream, []byte("uvw"))
	if c := small.TailCursor(PtyStream, 100); c != 1 {
		t.Errorf("TailCursor after a partial drop = %d, want 1", c)
	}

	bl := NewLog(100)
	bl.Append(Stdout, []byte("ab"))
	bl.Append(Stderr, []byte("XY"))
	bl.Append(Stdout, []byte("c"))
	bl.Append(Stdout, []byte("de"))
	for _, tt := range []struct {
		through uint64
		n       int
		want    string
	}{{0, 3, ""}, {1, 3, "ab"}, {2, 3, "ab"}, {3, 3, "abc"}, {3, 2, "bc"}, {4, 3, "cde"}, {4, 1, "e"}} {
		if got := string(bl.TailBytes(Stdout, tt.through, tt.n)); got != tt.want {
			t.Errorf("TailBytes(Stdout, %d, %d) = %q, want %q", tt.through, tt.n, got, tt.want)
		}
	}
}

// FuzzLogReader checks the reader contract behind resumable streams: a
// reader that follows a Log (with cursors, at any pace) and is never told
// of dropped output (dropped <= its cursor) has received every byte of
// every stream exactly once, in order; ids only increase.
func FuzzLogReader(f *testing.F) {
	f.Add([]byte("\x05abc\x81de\x02\x03fgh\x00\x00ij"), uint8(8))
	f.Add([]byte("\x01\x01\x01\x01\x01\x01"), uint8(2))
	f.Fuzz(func(t *testing.T, ops []byte, limit uint8) {
		l := NewLog(int(limit%32) + 1)
		var want, got [numStreams]bytes.Buffer
		var cursor uint64
		lost := false
		read := func(batch int) {
			es, dropped, _, _ := l.Read(cursor, batch)
			if dropped > cursor {
				lost = true
			}
			for _, e := range es {
				if e.ID <= cursor {
					t.Fatalf("entry %d after cursor %d", e.ID, cursor)
				}
				cursor = e.ID
				got[e.Stream].Write(e.Data)
			}
		}
		for i := 0; i < len(ops); i++ {
			op := ops[i]
			if op&0x80 != 0 { // read a batch
				read(int(op & 0x7))
				continue
			}
			n := int(op&0x1f) % 8
			s := Stream(op>>5) % numStreams
			if n == 0 || i+n > len(ops) {
				continue
			}
			data := append([]byte(nil), ops[i+1:i+1+min(n, len(ops)-i-1)]...)
			i += len(data)
			if len(data) == 0 {
				continue
			}
			want[s].Write(data)
			l.Append(s, data)
		}
		read(0)
		if lost {
			return
		}
		for s := range want {
			if !bytes.Equal(got[s].Bytes(), want[s].Bytes()) {
				t.Fatalf("stream %v: read %q, want %q, and no drop was reported", Stream(s), got[s].Bytes(), want[s].Bytes())
			}
		}
	})
}

func TestDefaultCapIsDocumented(t *testing.T) {
	if got := (Config{}).outputLimit(); got != envdapi.OutputCap {
		t.Errorf("default OutputLimit = %d, envdapi.OutputCap documents %d", got, envdapi.OutputCap)
	}
}
