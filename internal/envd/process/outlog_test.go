package process

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"
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
