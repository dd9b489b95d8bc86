package egress

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/declaw/declaw/internal/egress/stage"
)

// DefaultBodyIdleTimeout bounds the wait for the next bytes of a request
// body the sandbox is sending (a stalled upload gets 408 instead of
// holding the exchange open).
const DefaultBodyIdleTimeout = 30 * time.Second

type replyFunc func(status int, stg, reason string, body []byte, dir string) *http.Response

// outbound runs the outbound stages over one request: the request line and
// headers, and the body either held whole (up to MaxScanBody decoded) or,
// beyond that, streamed through the stages segment by segment with
// bounded memory while it is being sent upstream.
type outbound struct {
	ic       *intercepted
	pl       *stage.Pipeline
	stages   []stage.Stage
	ex       *stage.Exchange
	host     string
	req, out *http.Request
	ev       *HTTPEvent

	// streamDone receives the streaming goroutine's result once the body
	// is done (nil when the body was held or absent).
	streamDone chan error
}

// streamErr marks why a streamed body stopped.
type streamErr struct {
	kind string // "block", "unscannable", "client"
	err  error
}

func (e *streamErr) Error() string { return e.kind + ": " + e.err.Error() }
func (e *streamErr) Unwrap() error { return e.err }

// run applies the stages; a non-nil response is the answer for the
// sandbox (blocked, refused, malformed) and nothing goes upstream.
func (o *outbound) run(hasBody bool, reply replyFunc) *http.Response {
	cfg := o.ic.p.cfg
	out := o.out
	m := &stage.Message{Direction: stage.Outbound, Host: o.host, Header: out.Header,
		Method: o.req.Method, Path: out.URL.EscapedPath(), RawQuery: out.URL.RawQuery}
	ct := o.req.Header.Get("Content-Type")
	ce := o.req.Header.Get("Content-Encoding")

	var held []byte
	var rest io.Reader // the decoded body past held, when it is streamed
	var passRaw io.Reader
	notScanned := ""
	if hasBody {
		raw := &capBuffer{max: int(cfg.MaxScanBody) + 64<<10}
		tee := io.TeeReader(o.req.Body, raw)
		dec, err := stage.Decoder(tee, ce)
		if err == nil {
			held, err = io.ReadAll(io.LimitReader(dec, cfg.MaxScanBody+1))
		}
		switch {
		case err == nil:
		case isStall(err):
			return reply(http.StatusRequestTimeout, "malformed", "request body stalled: "+clipErr(err),
				errorJSON("declaw: request body stalled"), "outbound")
		case errors.Is(err, stage.ErrUnsupported) || !clientReadErr(err):
			// Not decodable as its Content-Encoding claims.
			what := "request body encoding not scannable"
			if o.pl.BlockOnUnscannable || raw.over {
				return reply(http.StatusUnsupportedMediaType, "scan_limit", what+": "+clipErr(err), errorJSON("blocked by declaw: "+what), "outbound")
			}
			notScanned = what
			passRaw = io.MultiReader(bytes.NewReader(raw.Bytes()), o.req.Body)
		default:
			return reply(http.StatusBadRequest, "malformed", "request body: "+clipErr(err), errorJSON("declaw: unreadable request body"), "outbound")
		}
		raw.stop()
		if passRaw == nil {
			if int64(len(held)) <= cfg.MaxScanBody {
				m.Body = held
			} else {
				rest = io.MultiReader(bytes.NewReader(held), dec)
				held = nil
			}
		}
	}

	v := stage.Run(o.stages, o.ex, m)
	if m.Path != out.URL.EscapedPath() {
		if u, err := url.Parse(m.Path); err == nil {
			out.URL.Path, out.URL.RawPath = u.Path, u.RawPath
		}
	}
	out.URL.RawQuery = m.RawQuery
	if v.Action == stage.Block {
		fillReport(o.ev, o.ex)
		return reply(o.ex.Block.Status, o.ex.Block.Stage, v.Reason, o.ex.Block.Body, "outbound")
	}
	switch {
	case !hasBody:
	case passRaw != nil:
		o.ev.Notes = append(o.ev.Notes, notScanned+", not scanned")
		out.Body = io.NopCloser(passRaw)
	case rest == nil:
		setBody(out, out.Header, m.Body)
	default:
		return o.stream(rest, ct, reply)
	}
	return nil
}

// stream sends the body upstream through the stages in segments.
func (o *outbound) stream(body io.Reader, ct string, reply replyFunc) *http.Response {
	var mu sync.Mutex // the stages and the exchange: one segment at a time
	var fieldErr error
	segment := func(seg []byte, jsonRaw bool) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		sm := &stage.Message{Direction: stage.Outbound, Host: o.host, Fragment: true, JSONRaw: jsonRaw,
			Header: http.Header{"Content-Type": {"text/plain"}}, Body: seg}
		if v := stage.Run(o.stages, o.ex, sm); v.Action == stage.Block {
			return nil, &streamErr{"block", errors.New(v.Reason)}
		}
		return sm.Body, nil
	}
	st := &stage.Streamer{
		Segment:  segment,
		MaxField: int(o.ic.p.cfg.MaxScanBody),
		Spans:    stage.SpanFuncOf(o.stages),
		Field: func(s string) string {
			b, err := segment([]byte(s), false)
			if err != nil {
				mu.Lock()
				if fieldErr == nil {
					fieldErr = err
				}
				mu.Unlock()
				return s
			}
			return string(b)
		},
	}
	sendCT, err := st.Prepare(ct)
	if err != nil {
		what := "request body not scannable: " + clipErr(err)
		if o.pl.BlockOnUnscannable {
			return reply(stage.UnscannableStatus(err), "scan_limit", what, errorJSON("blocked by declaw: request body not scannable"), "outbound")
		}
		o.ev.Notes = append(o.ev.Notes, what+", not scanned")
		sendCT = ct
		st = nil
	}
	out := o.out
	out.Header.Del("Content-Encoding")
	out.Header.Del("Content-Length")
	out.Header.Del("Transfer-Encoding")
	if sendCT != "" {
		out.Header.Set("Content-Type", sendCT)
	}
	out.ContentLength = -1
	out.TransferEncoding = nil
	out.GetBody = nil
	pr, pw := io.Pipe()
	out.Body = pr
	o.streamDone = make(chan error, 1)
	o.ev.Notes = append(o.ev.Notes, "request body streamed (over the scan buffer): scanned in segments")
	go func() {
		var err error
		if st == nil {
			_, err = io.Copy(pw, body)
		} else {
			w := &checkWriter{w: pw, check: func() error {
				mu.Lock()
				defer mu.Unlock()
				return fieldErr
			}}
			err = st.Stream(w, body, ct, sendCT)
			if ferr := w.check(); ferr != nil {
				err = ferr
			}
		}
		if err != nil {
			var se *streamErr
			switch {
			case errors.As(err, &se):
			case clientReadErr(err):
				err = &streamErr{"client", err}
			case errors.Is(err, io.ErrClosedPipe):
				// The transport stopped reading: the upstream side ended
				// the exchange, and the RoundTrip result says why.
			default:
				err = &streamErr{"unscannable", err}
			}
			pw.CloseWithError(err)
		} else {
			pw.Close()
		}
		var se *streamErr
		if errors.As(err, &se) {
			o.streamDone <- err
			return
		}
		o.streamDone <- nil // upstream side ended it: the RoundTrip error says why
	}()
	return nil
}

// streamFailed answers a request whose streamed body was stopped.
func streamFailed(err error, ex *stage.Exchange, ev *HTTPEvent, reply replyFunc) *http.Response {
	var se *streamErr
	errors.As(err, &se)
	ev.Notes = append(ev.Notes, "request stream cut; the upstream got a truncated body")
	switch se.kind {
	case "block":
		fillReport(ev, ex)
		if ex.Block != nil {
			return reply(ex.Block.Status, ex.Block.Stage, se.err.Error()+" (stream cut)", ex.Block.Body, "outbound")
		}
		return reply(http.StatusForbidden, "pii", se.err.Error(), errorJSON("blocked by declaw"), "outbound")
	case "unscannable":
		return reply(stage.UnscannableStatus(se.err), "scan_limit", "request body not scannable: "+clipErr(se.err),
			errorJSON("blocked by declaw: request body not scannable"), "outbound")
	}
	if isStall(se.err) {
		return reply(http.StatusRequestTimeout, "malformed", "request body stalled: "+clipErr(se.err),
			errorJSON("declaw: request body stalled"), "outbound")
	}
	return reply(http.StatusBadRequest, "malformed", "request body: "+clipErr(se.err), errorJSON("declaw: unreadable request body"), "outbound")
}

// checkWriter fails writes once check reports an error (a form field or
// part header a stage blocked).
type checkWriter struct {
	w     io.Writer
	check func() error
}

func (c *checkWriter) Write(p []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// capBuffer records up to max bytes, then only notes it overflowed;
// stop ends the recording.
type capBuffer struct {
	bytes.Buffer
	max     int
	over    bool
	stopped bool
}

func (c *capBuffer) Write(p []byte) (int, error) {
	if c.stopped || c.over {
		return len(p), nil
	}
	if c.Len()+len(p) > c.max {
		c.over = true
		c.Reset()
		return len(p), nil
	}
	return c.Buffer.Write(p)
}

func (c *capBuffer) stop() { c.stopped = true }

// errBodyStalled is the error of a request body that sent nothing for the
// body idle timeout.
var errBodyStalled = errors.New("no request body bytes within the idle timeout")

func isStall(err error) bool { return errors.Is(err, errBodyStalled) || isTimeout(err) }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// clientErr marks an error reading the sandbox's request body (framing,
// connection), as opposed to decoding it.
type clientErr struct{ err error }

func (e *clientErr) Error() string { return e.err.Error() }
func (e *clientErr) Unwrap() error { return e.err }

func clientReadErr(err error) bool {
	var ce *clientErr
	return errors.As(err, &ce)
}

// clientBody wraps a sandbox request body: its read errors are marked as
// the client's, and a read that waits longer than idle for bytes fails
// with errBodyStalled. deadline, when set, is the connection's read
// deadline setter (HTTP/1); otherwise a timer closes the body (HTTP/2,
// whose body Close unblocks a Read).
type clientBody struct {
	rc       io.ReadCloser
	idle     time.Duration
	deadline func(time.Time) error
	stalled  atomic.Bool
	timer    *time.Timer
	n        int64
	eof      bool // the body was read to its end
	failed   bool // a read failed: nothing more can be read
}

// done reports whether nothing is left to read.
func (b *clientBody) done() bool { return b.eof || b.failed }

func newClientBody(rc io.ReadCloser, idle time.Duration, deadline func(time.Time) error) *clientBody {
	b := &clientBody{rc: rc, idle: idle, deadline: deadline}
	if deadline == nil {
		b.timer = time.AfterFunc(idle, func() {
			b.stalled.Store(true)
			rc.Close()
		})
		b.timer.Stop()
	}
	return b
}

func (b *clientBody) Read(p []byte) (int, error) {
	if b.deadline != nil {
		b.deadline(time.Now().Add(b.idle))
	} else {
		b.timer.Reset(b.idle)
	}
	n, err := b.rc.Read(p)
	if b.deadline != nil {
		b.deadline(time.Time{})
	} else {
		b.timer.Stop()
	}
	b.n += int64(n)
	if err == io.EOF {
		b.eof = true
	}
	if err != nil && err != io.EOF {
		b.failed = true
		if b.stalled.Load() || isTimeout(err) {
			return n, &clientErr{errBodyStalled}
		}
		return n, &clientErr{err}
	}
	return n, err
}

// Close ends the body. On HTTP/1 it does not drain what is left (that
// could be a whole blocked upload): the connection loop drains a little or
// closes the connection. On HTTP/2 closing resets the stream.
func (b *clientBody) Close() error {
	if b.timer != nil {
		b.timer.Stop()
		return b.rc.Close()
	}
	return nil
}

func (ic *intercepted) scheme() string {
	if ic.isTLS {
		return "https"
	}
	return "http"
}
