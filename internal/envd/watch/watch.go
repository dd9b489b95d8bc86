// Package watch watches directories for changes (create, write, remove,
// rename, chmod) with inotify, through fsnotify, for envd's
// /files/watch API.
//
// A Manager owns the Watchers. A Watcher watches one directory, or a whole
// tree: fsnotify is not recursive, so a recursive Watcher adds a watch for
// every directory in the tree and for each new one as it appears. Events
// are kept in a bounded buffer with increasing ids that any number of
// subscribers follow at their own pace (see Watcher.Read); a slow
// subscriber never holds up the others or the kernel queue, it finds that
// old events were dropped and is told so.
//
// Resources are capped: the number of Watchers (each is one inotify
// instance), the number of watched directories over all Watchers, and the
// events buffered per Watcher. A Watcher nobody subscribed to for
// Config.IdleTimeout is removed.
package watch

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Sentinel errors; callers branch on them with errors.Is.
var (
	ErrNotFound = errors.New("watcher not found")
	ErrLimit    = errors.New("watch limit reached")
	ErrNotDir   = errors.New("not a directory")
)

// Event types (Event.Type).
const (
	Create = "create"
	Write  = "write"
	Remove = "remove"
	Rename = "rename"
	Chmod  = "chmod"
	Gap    = "gap"   // events were lost (kernel queue overflow); Err says why
	Error  = "error" // a watcher error, e.g. a new directory could not be watched
)

// Config tunes a Manager. The zero value is valid.
type Config struct {
	// MaxWatchers caps the number of Watchers. Default 32.
	MaxWatchers int
	// MaxDirs caps the directories watched over all Watchers. Default 8192.
	MaxDirs int
	// Buffer is how many events each Watcher keeps for its subscribers.
	// Default 4096.
	Buffer int
	// IdleTimeout is how long a Watcher without subscribers lives. Default 60s.
	IdleTimeout time.Duration
}

func (c Config) maxWatchers() int { return orDefault(c.MaxWatchers, 32) }
func (c Config) maxDirs() int     { return orDefault(c.MaxDirs, 8192) }
func (c Config) buffer() int      { return orDefault(c.Buffer, 4096) }
func (c Config) idleTimeout() time.Duration {
	if c.IdleTimeout > 0 {
		return c.IdleTimeout
	}
	return time.Minute
}

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// Event is one change seen by a Watcher.
type Event struct {
	ID    uint64 // 1, 2, 3, ... per Watcher
	Type  string // Create, Write, Remove, Rename, Chmod, Gap or Error
	Path  string // absolute
	Name  string // Path relative to the watched directory ("." for itself)
	IsDir bool   // known for create, write and chmod, and for watched directories
	Time  time.Time
	Err   string // for Gap and Error
}

// Manager creates and tracks Watchers. Safe for concurrent use.
type Manager struct {
	cfg      Config
	mu       sync.Mutex
	watchers map[string]*Watcher // +checklocks:mu
	dirs     int                 // +checklocks:mu, directories watched over all watchers
}

// NewManager returns a Manager.
func NewManager(cfg Config) *Manager {
	return &Manager{cfg: cfg, watchers: make(map[string]*Watcher)}
}

// reserveDirs takes n directories from the global budget.
func (m *Manager) reserveDirs(n int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dirs+n > m.cfg.maxDirs() {
		return false
	}
	m.dirs += n
	return true
}

func (m *Manager) releaseDirs(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dirs -= n
}

// Watch starts watching the directory root (absolute, clean), and with
// recursive its whole tree (symlinks are not followed).
func (m *Manager) Watch(root string, recursive bool) (*Watcher, error) {
	st, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", root, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("watch %s: %w", root, ErrNotDir)
	}
	var idb [8]byte
	rand.Read(idb[:])
	w := &Watcher{
		id:        hex.EncodeToString(idb[:]),
		root:      root,
		recursive: recursive,
		m:         m,
		dirs:      make(map[string]bool),
		changed:   make(chan struct{}),
		done:      make(chan struct{}),
	}
	m.mu.Lock()
	if len(m.watchers) >= m.cfg.maxWatchers() {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: at most %d watchers", ErrLimit, m.cfg.maxWatchers())
	}
	m.watchers[w.id] = w // reserved; removed again on failure
	m.mu.Unlock()

	fw, err := fsnotify.NewBufferedWatcher(1024)
	if err != nil {
		m.forget(w)
		if errors.Is(err, syscall.EMFILE) {
			return nil, fmt.Errorf("%w: watch %s: the kernel's inotify instance limit: %v", ErrLimit, root, err)
		}
		return nil, fmt.Errorf("watch %s: %w", root, err)
	}
	w.fw = fw
	w.mu.Lock()
	err = w.addLocked(root)
	if err == nil && recursive {
		_, err = w.addTreeLocked(root, false)
	}
	w.mu.Unlock()
	if err != nil {
		w.close()
		return nil, err
	}
	w.mu.Lock()
	w.idle = time.AfterFunc(m.cfg.idleTimeout(), w.idleExpired)
	w.mu.Unlock()
	go w.loop()
	return w, nil
}

// Get returns the Watcher with this id.
func (m *Manager) Get(id string) (*Watcher, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.watchers[id]
	if !ok {
		return nil, fmt.Errorf("watcher %q: %w", id, ErrNotFound)
	}
	return w, nil
}

// Remove stops and removes the Watcher with this id.
func (m *Manager) Remove(id string) error {
	w, err := m.Get(id)
	if err != nil {
		return err
	}
	w.close()
	return nil
}

// Len returns the number of Watchers.
func (m *Manager) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.watchers)
}

// Close stops every Watcher.
func (m *Manager) Close() {
	m.mu.Lock()
	ws := make([]*Watcher, 0, len(m.watchers))
	for _, w := range m.watchers {
		ws = append(ws, w)
	}
	m.mu.Unlock()
	for _, w := range ws {
		w.close()
	}
}

func (m *Manager) forget(w *Watcher) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.watchers[w.id] == w {
		delete(m.watchers, w.id)
	}
}

// Watcher watches one directory or tree. Safe for concurrent use.
type Watcher struct {
	id        string // immutable
	root      string // immutable
	recursive bool   // immutable
	m         *Manager
	fw        *fsnotify.Watcher // immutable once Watch returns
	done      chan struct{}     // closed by close
	closeOnce sync.Once

	mu      sync.Mutex
	dirs    map[string]bool // +checklocks:mu, the watched directories
	events  []Event         // +checklocks:mu, the buffered events, ids ascending and consecutive
	lastID  uint64          // +checklocks:mu
	changed chan struct{}   // +checklocks:mu, closed and replaced on every append and on close
	closed  bool            // +checklocks:mu
	subs    int             // +checklocks:mu
	idle    *time.Timer     // +checklocks:mu, removes the watcher when nobody subscribes
}

// ID returns the watcher's id.
func (w *Watcher) ID() string { return w.id }

// Root returns the watched directory.
func (w *Watcher) Root() string { return w.root }

// Subscribe records a subscriber, which keeps the watcher from expiring,
// until the returned function is called.
func (w *Watcher) Subscribe() (unsubscribe func()) {
	w.mu.Lock()
	w.subs++
	if w.idle != nil {
		w.idle.Stop()
	}
	w.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.subs--
			if w.subs == 0 && w.idle != nil && !w.closed {
				w.idle.Reset(w.m.cfg.idleTimeout())
			}
		})
	}
}

func (w *Watcher) idleExpired() {
	w.mu.Lock()
	expired := w.subs == 0
	w.mu.Unlock()
	if expired {
		w.close()
	}
}

// Read returns the buffered events with an id greater than after, at most
// maxEvents (0 = all). lost reports that events after after were dropped
// from the buffer before this call. If none are available, changed is
// closed on the next event or when the watcher is closed; closed reports
// that no event will follow.
func (w *Watcher) Read(after uint64, maxEvents int) (events []Event, lost bool, changed <-chan struct{}, closed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.events) > 0 {
		first := w.events[0].ID
		lost = after < first-1 // first >= 1; after+1 could overflow
		i := 0
		if after >= first {
			i = int(min(after-first+1, uint64(len(w.events))))
		}
		events = w.events[i:]
		if maxEvents > 0 && len(events) > maxEvents {
			events = events[:maxEvents]
		}
		events = append([]Event(nil), events...)
	}
	return events, lost, w.changed, w.closed
}

// appendLocked records an event.
// +checklocks:w.mu
func (w *Watcher) appendLocked(ev Event) {
	if w.closed {
		return
	}
	w.lastID++
	ev.ID = w.lastID
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if ev.Name == "" && ev.Path != "" {
		if rel, err := filepath.Rel(w.root, ev.Path); err == nil {
			ev.Name = rel
		}
	}
	if n := w.m.cfg.buffer(); len(w.events) >= n {
		// Drop the oldest half at once, so appends stay cheap.
		k := copy(w.events, w.events[len(w.events)-n/2:])
		clear(w.events[k:])
		w.events = w.events[:k]
	}
	w.events = append(w.events, ev)
	close(w.changed)
	w.changed = make(chan struct{})
}

// addLocked watches the directory dir.
// +checklocks:w.mu
func (w *Watcher) addLocked(dir string) error {
	if w.closed {
		return fmt.Errorf("watch %s: %w", dir, ErrNotFound)
	}
	if w.dirs[dir] {
		return nil
	}
	if !w.m.reserveDirs(1) {
		return fmt.Errorf("%w: at most %d watched directories", ErrLimit, w.m.cfg.maxDirs())
	}
	if err := w.fw.Add(dir); err != nil {
		w.m.releaseDirs(1)
		if errors.Is(err, syscall.ENOSPC) {
			return fmt.Errorf("%w: watch %s: the kernel's inotify watch limit: %v", ErrLimit, dir, err)
		}
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	w.dirs[dir] = true
	return nil
}

// addTreeLocked watches every directory below dir (dir itself must be
// watched already). With report, it records a create event for every
// entry found: they may have been created before their directory was
// watched, and would be missed otherwise (so a create may be reported
// twice). It returns the number of directories added.
// +checklocks:w.mu
func (w *Watcher) addTreeLocked(dir string, report bool) (int, error) {
	added := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if p == dir {
			return err
		}
		if err != nil {
			if d != nil && d.IsDir() {
				return fs.SkipDir // unreadable or vanished: skip it
			}
			return nil
		}
		if report {
			w.appendLocked(Event{Type: Create, Path: p, IsDir: d.IsDir()})
		}
		if !d.IsDir() {
			return nil
		}
		if err := w.addLocked(p); err != nil {
			if errors.Is(err, ErrLimit) {
				return err
			}
			return fs.SkipDir // e.g. removed meanwhile
		}
		added++
		return nil
	})
	return added, err
}

// removeTreeLocked forgets the watched directory dir and those below it
// (after it was removed or renamed).
// +checklocks:w.mu
func (w *Watcher) removeTreeLocked(dir string) bool {
	was := w.dirs[dir]
	prefix := dir + string(filepath.Separator)
	n := 0
	for d := range w.dirs {
		if d == dir || strings.HasPrefix(d, prefix) {
			delete(w.dirs, d)
			_ = w.fw.Remove(d) // fails if the kernel already dropped it
			n++
		}
	}
	w.m.releaseDirs(n)
	return was
}

// loop turns fsnotify's events into Events until the watcher is closed.
func (w *Watcher) loop() {
	for {
		select {
		case ev, ok := <-w.fw.Events:
			if !ok {
				return
			}
			w.handle(ev)
		case err, ok := <-w.fw.Errors:
			if !ok {
				return
			}
			w.mu.Lock()
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				w.appendLocked(Event{Type: Gap, Err: "events were lost: the kernel's event queue overflowed"})
			} else {
				w.appendLocked(Event{Type: Error, Err: err.Error()})
			}
			w.mu.Unlock()
		case <-w.done:
			return
		}
	}
}

// ops maps fsnotify's operations to event types, in the order reported.
var ops = []struct {
	op fsnotify.Op
	t  string
}{
	{fsnotify.Create, Create},
	{fsnotify.Write, Write},
	{fsnotify.Chmod, Chmod},
	{fsnotify.Rename, Rename},
	{fsnotify.Remove, Remove},
}

func (w *Watcher) handle(ev fsnotify.Event) {
	path := filepath.Clean(ev.Name)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	for _, o := range ops {
		if !ev.Has(o.op) {
			continue
		}
		switch o.t {
		case Remove, Rename:
			isDir := w.removeTreeLocked(path)
			w.appendLocked(Event{Type: o.t, Path: path, IsDir: isDir})
		default:
			st, err := os.Lstat(path)
			isDir := err == nil && st.IsDir()
			w.appendLocked(Event{Type: o.t, Path: path, IsDir: isDir})
			if o.t == Create && isDir && w.recursive {
				if err := w.addLocked(path); err != nil {
					w.appendLocked(Event{Type: Error, Path: path, Err: err.Error()})
					continue
				}
				if _, err := w.addTreeLocked(path, true); err != nil {
					w.appendLocked(Event{Type: Error, Path: path, Err: err.Error()})
				}
			}
		}
	}
}

// close stops the watcher, releases its directories and wakes subscribers.
func (w *Watcher) close() {
	w.closeOnce.Do(func() {
		w.m.forget(w)
		close(w.done)
		w.mu.Lock()
		if w.idle != nil {
			w.idle.Stop()
		}
		w.m.releaseDirs(len(w.dirs))
		clear(w.dirs)
		w.closed = true
		close(w.changed)
		w.mu.Unlock()
		if w.fw != nil {
			w.fw.Close()
		}
	})
}

// Dirs returns the watched directories, sorted (for tests and debugging).
func (w *Watcher) Dirs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.dirs))
	for d := range w.dirs {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}
