package process

import (
	"math"
	"sort"
	"sync"
)

// Stream names one output stream of a process.
type Stream uint8

const (
	Stdout Stream = iota
	Stderr
	PtyStream // the terminal output of a process on a pty
	numStreams
)

func (s Stream) String() string {
	switch s {
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	case PtyStream:
		return "pty"
	}
	return "unknown"
}

// Entry is one chunk of output as read from the process. Data is never
// modified after the entry is appended, so readers may keep it.
type Entry struct {
	ID     uint64 // 1, 2, 3, ... in output order across all streams of a Log
	Stream Stream
	Data   []byte
}

// Log is the retained output of one process: a sequence of entries with
// increasing ids, capped per stream by dropping the oldest entries.
//
// Readers follow with a cursor (the last id they saw) through Since; a reader
// too slow to keep up simply finds that older entries were dropped.
//
// Without holds (see Hold), the producer (the pipe readers) never blocks on
// consumers: Append only takes a short lock and wakes waiting readers by
// closing a channel. While a Hold is registered, Append does not drop an
// entry the hold has not consumed: it waits for room instead, so the
// process blocks on its full pipe, like a process writing into a pipe that
// its reader drains slowly. Retention stays bounded either way: at most
// limit bytes per stream plus one appended entry.
// Safe for concurrent use.
type Log struct {
	mu      sync.Mutex
	limit   int // bytes retained per stream; >= 1
	lastID  uint64
	streams [numStreams]streamLog
	changed chan struct{} // closed (and replaced) on every append and on Close
	closed  bool

	holds    map[*Hold]struct{} // +checklocks:mu, registered holds
	noHolds  bool               // +checklocks:mu, set by ReleaseHolds: hold no more
	room     *sync.Cond         // on mu: signalled when a hold advances or goes, and on Close
	holdWait int64              // +checklocks:mu, appends that waited for a hold (for tests and stats)
}

type streamLog struct {
	entries []Entry // entries[head:] are retained
	head    int
	size    int    // bytes retained
	total   int64  // bytes ever appended
	dropped uint64 // id of the newest entry any of whose bytes were dropped
}

// NewLog returns a Log keeping at most limit bytes per stream (minimum 1).
func NewLog(limit int) *Log {
	l := &Log{limit: max(limit, 1), changed: make(chan struct{}), holds: map[*Hold]struct{}{}}
	l.room = sync.NewCond(&l.mu)
	return l
}

// Append records data read from stream s. It copies nothing: the caller
// must not reuse data. Appends after Close are dropped: Append reports
// false then. While a Hold has not consumed the retained output of s, it
// waits for room (see Log).
func (l *Log) Append(s Stream, data []byte) bool {
	ok, _ := l.append(s, data)
	return ok
}

// append is Append that also reports whether it waited for a hold.
func (l *Log) append(s Stream, data []byte) (ok, waited bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false, false
	}
	if len(data) == 0 || s >= numStreams {
		return true, false
	}
	sl := &l.streams[s]
	for !l.closed {
		keep, held := l.holdCursor()
		if !held {
			break
		}
		// Drop what every hold consumed to make room; wait while the
		// rest (unconsumed by some hold) leaves no room. An entry larger
		// than limit is taken once nothing unconsumed is retained.
		sl.trim(max(l.limit-len(data), 0), keep)
		if sl.size == 0 || sl.size+len(data) <= l.limit {
			break
		}
		if !waited {
			l.holdWait++
		}
		waited = true
		l.room.Wait()
	}
	if l.closed {
		return false, waited
	}
	l.lastID++
	sl.entries = append(sl.entries, Entry{ID: l.lastID, Stream: s, Data: data})
	sl.size += len(data)
	sl.total += int64(len(data))
	keep, _ := l.holdCursor()
	sl.trim(l.limit, keep)
	close(l.changed)
	l.changed = make(chan struct{})
	return true, waited
}

// holdCursor returns the oldest cursor of the registered holds: entries
// with a greater id must not be dropped. held is false without holds
// (keep is then the maximum id).
// +checklocks:l.mu
func (l *Log) holdCursor() (keep uint64, held bool) {
	keep = math.MaxUint64
	for h := range l.holds {
		keep, held = min(keep, h.cursor), true
	}
	return keep, held
}

// trim drops the oldest bytes until at most limit remain, but never any
// byte of an entry with an id greater than keep.
func (sl *streamLog) trim(limit int, keep uint64) {
	for sl.size > limit && sl.entries[sl.head].ID <= keep {
		e := &sl.entries[sl.head]
		excess := sl.size - limit
		sl.dropped = e.ID
		if len(e.Data) <= excess {
			sl.size -= len(e.Data)
			sl.entries[sl.head] = Entry{}
			sl.head++
			continue
		}
		// Keep the tail of the oldest entry; a new slice header, so
		// readers holding the old Entry are unaffected.
		e.Data = e.Data[excess:]
		sl.size -= excess
	}
	if sl.head > 64 && sl.head > len(sl.entries)/2 {
		n := copy(sl.entries, sl.entries[sl.head:])
		clear(sl.entries[n:])
		sl.entries = sl.entries[:n]
		sl.head = 0
	}
}

// Close marks the end of the output and wakes all readers.
func (l *Log) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.changed)
		l.room.Broadcast()
	}
}

// Hold is a reader that holds back the producer of a Log: Append waits
// instead of dropping output the hold has not consumed (see Log). The
// holder reports its progress with Advance and must call Release when it
// stops reading, or the process it reads stays blocked on its pipe. The
// methods are safe on a nil *Hold (no-ops), and for concurrent use.
type Hold struct {
	l      *Log
	cursor uint64 // +checklocks:l.mu, id of the last entry consumed
}

// Hold registers a hold that consumed the entries up to id after. After
// ReleaseHolds, the returned hold is already released.
func (l *Log) Hold(after uint64) *Hold {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := &Hold{l: l, cursor: after}
	if !l.noHolds {
		l.holds[h] = struct{}{}
	}
	return h
}

// Advance records that the holder consumed the entries up to id.
func (h *Hold) Advance(id uint64) {
	if h == nil {
		return
	}
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	if id > h.cursor {
		h.cursor = id
		h.l.room.Broadcast()
	}
}

// Release unregisters the hold: the producer no longer waits for it.
// Idempotent.
func (h *Hold) Release() {
	if h == nil {
		return
	}
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	delete(h.l.holds, h)
	h.l.room.Broadcast()
}

// ReleaseHolds releases every hold, now and to come: the producer never
// waits again. For a process that was killed or timed out, and shutdown.
func (l *Log) ReleaseHolds() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.noHolds = true
	clear(l.holds)
	l.room.Broadcast()
}

// HoldWaits reports how many appends waited for a hold.
func (l *Log) HoldWaits() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.holdWait
}

// Since returns the retained entries with an id greater than after, in id
// order, at most maxEntries of them (0 = all). If none are available it
// returns the channel that is closed on the next change; closed reports
// whether the log is closed (no entry will ever follow the returned ones
// once a call returns no entries and closed is true).
func (l *Log) Since(after uint64, maxEntries int) (entries []Entry, changed <-chan struct{}, closed bool) {
	entries, _, changed, closed = l.Read(after, maxEntries)
	return entries, changed, closed
}

// Read is Since that also returns dropped, the id of the newest entry any
// of whose bytes were dropped by the cap (0 if none). Output with an id
// greater than after was lost to the reader iff dropped > after; a reader
// reports such a gap once, not again for the same dropped id.
func (l *Log) Read(after uint64, maxEntries int) (entries []Entry, dropped uint64, changed <-chan struct{}, closed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := range l.streams {
		dropped = max(dropped, l.streams[s].dropped)
	}
	var tails [numStreams][]Entry
	for s := range tails {
		sl := &l.streams[s]
		live := sl.entries[sl.head:]
		i := sort.Search(len(live), func(i int) bool { return live[i].ID > after })
		tails[s] = live[i:]
	}
	// Merge the per-stream tails by id.
	for {
		best := -1
		for s := range tails {
			if len(tails[s]) > 0 && (best < 0 || tails[s][0].ID < tails[best][0].ID) {
				best = s
			}
		}
		if best < 0 || (maxEntries > 0 && len(entries) == maxEntries) {
			break
		}
		entries = append(entries, tails[best][0])
		tails[best] = tails[best][1:]
	}
	return entries, dropped, l.changed, l.closed
}

// TailCursor returns a cursor from which Read yields the newest entries of
// stream s that together hold at most maxBytes (whole entries only, none
// partly dropped): a bounded scrollback.
func (l *Log) TailCursor(s Stream, maxBytes int) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	sl := &l.streams[s]
	live := sl.entries[sl.head:]
	cursor, n := l.lastID, 0
	for i := len(live) - 1; i >= 0; i-- {
		if n+len(live[i].Data) > maxBytes || live[i].ID <= sl.dropped {
			break
		}
		n += len(live[i].Data)
		cursor = live[i].ID - 1
	}
	return cursor
}

// TailBytes returns the last (at most n) retained bytes of stream s among
// the entries with an id of at most through.
func (l *Log) TailBytes(s Stream, through uint64, n int) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	sl := &l.streams[s]
	live := sl.entries[sl.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].ID > through })
	var out []byte
	for i--; i >= 0 && len(out) < n; i-- {
		d := live[i].Data
		if k := n - len(out); len(d) > k {
			d = d[len(d)-k:]
		}
		out = append(append([]byte(nil), d...), out...)
	}
	return out
}

// LastID returns the id of the last entry appended (0 if none), so a
// reader can follow only what comes next.
func (l *Log) LastID() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastID
}

// Bytes returns a copy of the retained output of stream s.
func (l *Log) Bytes(s Stream) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	sl := &l.streams[s]
	out := make([]byte, 0, sl.size)
	for _, e := range sl.entries[sl.head:] {
		out = append(out, e.Data...)
	}
	return out
}

// Stats reports how many bytes of stream s are retained and were ever appended.
func (l *Log) Stats(s Stream) (retained int, total int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.streams[s].size, l.streams[s].total
}

// Retained returns how many bytes of output the log holds, all streams.
func (l *Log) Retained() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for s := range l.streams {
		n += l.streams[s].size
	}
	return n
}
