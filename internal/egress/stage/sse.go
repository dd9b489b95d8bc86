package stage

import (
	"bytes"

	"github.com/declaw/declaw/internal/guard/redact"
)

// MaxSSEEvent bounds how much of one server-sent event is held back
// waiting for its terminating blank line; beyond it the partial event is
// processed as it is.
const MaxSSEEvent = 64 << 10

// SSE runs the inbound stages on a text/event-stream response one event at
// a time, in order: each complete event (up to a blank line) goes through
// the stages other than rehydration (injection, transformations, audit),
// then through a streaming redact.Rehydrator, which holds back a trailing
// partial [REDACTED_… token across chunk boundaries. The caller writes
// and flushes what Write returns after every chunk it reads, and what
// Flush returns at the end. After a Block, Write and Flush return nothing
// more and Blocked reports the verdict.
type SSE struct {
	ex      *Exchange
	stages  []Stage
	host    string
	reh     *redact.Rehydrator
	pending []byte
	blocked *Verdict
	audit   []byte
	maxAud  int
}

// NewSSE returns a stream processor for the inbound stages that apply.
func NewSSE(p *Pipeline, ex *Exchange, host string, m *Message) *SSE {
	s := &SSE{ex: ex, host: host}
	for _, st := range p.Stages(Inbound, host) {
		switch st := st.(type) {
		case *RehydrateStage:
			if ex.Redactor != nil && ex.Redactor.Len() > 0 {
				s.reh = redact.NewRehydrator(RehydrationMap(ex.Redactor.Map(), true))
			}
		case *AuditStage:
			s.maxAud = st.Max
		default:
			s.stages = append(s.stages, st)
		}
	}
	return s
}

// Write consumes a chunk of the stream and returns the bytes to send now.
func (s *SSE) Write(chunk []byte) []byte {
	if s.blocked != nil {
		return nil
	}
	s.pending = append(s.pending, chunk...)
	end := lastEventEnd(s.pending)
	if end < 0 && len(s.pending) < MaxSSEEvent {
		return nil
	}
	if end < 0 {
		end = len(s.pending)
	}
	events := s.pending[:end]
	s.pending = bytes.Clone(s.pending[end:])
	return s.process(events, false)
}

// Flush processes whatever is left at the end of the stream.
func (s *SSE) Flush() []byte {
	if s.blocked != nil {
		return nil
	}
	events := s.pending
	s.pending = nil
	return s.process(events, true)
}

// Blocked returns the blocking verdict, if a stage blocked the stream.
func (s *SSE) Blocked() *Verdict { return s.blocked }

func (s *SSE) process(events []byte, final bool) []byte {
	if len(events) > 0 && len(s.stages) > 0 {
		m := &Message{Direction: Inbound, Host: s.host, Header: nil, Body: events}
		m.Header = map[string][]string{"Content-Type": {"text/event-stream"}}
		if v := Run(s.stages, s.ex, m); v.Action == Block {
			s.blocked = &v
			return nil
		}
		events = m.Body
	}
	audited := events // before rehydration: the audit keeps the tokens
	var out []byte
	if s.reh != nil {
		txt := s.reh.Write(string(events))
		if final {
			txt += s.reh.Flush()
		}
		s.ex.Report.Rehydrated += bytes.Count(events, []byte(redact.TokenPrefix)) - bytes.Count([]byte(txt), []byte(redact.TokenPrefix))
		out = []byte(txt)
	} else {
		out = events
	}
	if s.maxAud > 0 && len(s.audit) < s.maxAud {
		n := min(len(audited), s.maxAud-len(s.audit))
		s.audit = append(s.audit, audited[:n]...)
		s.ex.Report.ResponseBody = s.audit
		if n < len(audited) {
			s.ex.Report.BodiesTruncated = true
		}
	}
	return out
}

// lastEventEnd returns the index just past the last blank line ("\n\n",
// "\r\n\r\n" or "\r\r") in b, or -1.
func lastEventEnd(b []byte) int {
	best := -1
	for _, sep := range [][]byte{[]byte("\n\n"), []byte("\r\n\r\n"), []byte("\r\r")} {
		if i := bytes.LastIndex(b, sep); i >= 0 && i+len(sep) > best {
			best = i + len(sep)
		}
	}
	return best
}
