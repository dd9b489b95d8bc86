package stage

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/textproto"
	"unicode/utf8"

	"golang.org/x/text/transform"
)

// Windows of StreamText: a segment is processed once the buffer holds
// StreamWindow bytes, and the last StreamHoldback bytes wait for the next
// window, so that a finding is never cut by a window's end unless it is
// longer than the holdback.
const (
	StreamWindow   = 64 << 10
	StreamHoldback = 1 << 10
)

// cutLead is how far before a segment end StreamText looks for a finding
// that straddles it (longer than any finding of the fast types).
const cutLead = 2 << 10

// SegmentFunc processes one segment of a streamed text body and returns
// the bytes to send on; an error stops the stream.
type SegmentFunc func(seg []byte) ([]byte, error)

// SpanFunc returns the [start, end) byte ranges of findings in a window, in
// order; StreamText never ends a segment inside one.
type SpanFunc func(window []byte) [][2]int

// StreamText copies a text body of any size from src to dst with bounded
// memory (about StreamWindow bytes): it reads windows, ends each segment
// at a safe point (after the last whitespace before the holdback, never
// inside a finding of spans, a UTF-8 sequence or, for JSON, an escape),
// passes the segment through seg and writes the result. A body in a
// charset other than UTF-8 (declared or sniffed, see BodyCharset) is
// decoded for seg and encoded back; JSON (by contentType) is first
// normalised so that \u escapes of ASCII letters, digits and the
// punctuation of addresses and numbers become the characters themselves
// (the same JSON value), which is what the detectors read.
func StreamText(dst io.Writer, src io.Reader, contentType string, seg SegmentFunc, spans SpanFunc) error {
	buf := make([]byte, 0, StreamWindow+StreamHoldback)
	// The first bytes decide the charset.
	n, err := io.ReadFull(src, buf[:min(cap(buf), 4096)])
	buf = buf[:n]
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	if err != nil && err != io.EOF {
		return err
	}
	eof := err == io.EOF
	enc, cerr := BodyCharset(contentType, buf)
	if cerr != nil {
		return cerr
	}
	var r io.Reader = &prefixed{head: append([]byte(nil), buf...), r: src, eof: eof}
	buf = buf[:0]
	w := dst
	var closer io.Closer
	if enc != nil {
		r = transform.NewReader(r, enc.NewDecoder())
		tw := transform.NewWriter(dst, enc.NewEncoder())
		w, closer = tw, tw
	}
	isJSON := KindOf(contentType) == KindJSON
	if isJSON {
		r = transform.NewReader(r, jsonUnescaper{})
	}
	eof = false
	for {
		for !eof && len(buf) < StreamWindow {
			k, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+k]
			if err == io.EOF {
				eof = true
			} else if err != nil {
				return err
			}
		}
		cut := len(buf)
		if !eof {
			cut = safeCut(buf, len(buf)-StreamHoldback, spans, isJSON)
		}
		if cut > 0 {
			out, err := seg(buf[:cut])
			if err != nil {
				return err
			}
			if _, err := w.Write(out); err != nil {
				return err
			}
		}
		if eof {
			break
		}
		buf = buf[:copy(buf, buf[cut:])]
	}
	if closer != nil {
		return closer.Close()
	}
	return nil
}

// safeCut moves cut back to a point where a segment may end.
func safeCut(buf []byte, cut int, spans SpanFunc, isJSON bool) int {
	// After whitespace when there is some nearby.
	for i := cut; i > cut-256 && i > 0; i-- {
		if c := buf[i-1]; c == ' ' || c == '\n' || c == '\t' || c == '\r' {
			cut = i
			break
		}
	}
	if spans != nil {
		// Only a finding that starts shortly before the cut can straddle
		// it: the detectors see from cutLead bytes before it to the end.
		from := max(0, cut-cutLead)
		for _, sp := range spans(buf[from:]) {
			if s, e := sp[0]+from, sp[1]+from; s < cut && cut < e {
				cut = s
				break
			}
		}
	}
	if isJSON {
		for i := max(0, cut-12); i < cut; i++ {
			if buf[i] == '\\' {
				for i > 0 && buf[i-1] == '\\' {
					i--
				}
				cut = i
				break
			}
		}
	}
	for cut > 0 && cut < len(buf) && !utf8.RuneStart(buf[cut]) {
		cut--
	}
	return max(cut, 0)
}

// prefixed reads head, then r.
type prefixed struct {
	head []byte
	r    io.Reader
	eof  bool
}

func (p *prefixed) Read(b []byte) (int, error) {
	if len(p.head) > 0 {
		n := copy(b, p.head)
		p.head = p.head[n:]
		return n, nil
	}
	if p.eof {
		return 0, io.EOF
	}
	return p.r.Read(b)
}

// jsonUnescaper turns \u escapes of characters PII is written with
// (ASCII letters, digits, and @ . - _ + : / space) into the characters.
// Every other byte, escape or not, is copied as it is; inside and outside
// strings the JSON value is unchanged.
type jsonUnescaper struct{ transform.NopResetter }

var errShort = transform.ErrShortSrc

func (jsonUnescaper) Transform(dst, src []byte, atEOF bool) (nDst, nSrc int, err error) {
	for nSrc < len(src) {
		c := src[nSrc]
		if c != '\\' {
			if nDst >= len(dst) {
				return nDst, nSrc, transform.ErrShortDst
			}
			dst[nDst] = c
			nDst++
			nSrc++
			continue
		}
		if nSrc+1 >= len(src) {
			if !atEOF {
				return nDst, nSrc, errShort
			}
			return copyN(dst, src, nDst, nSrc, 1)
		}
		if src[nSrc+1] != 'u' {
			nd, ns, err := copyN(dst, src, nDst, nSrc, 2)
			if err != nil {
				return nd, ns, err
			}
			nDst, nSrc = nd, ns
			continue
		}
		if nSrc+6 > len(src) {
			if !atEOF {
				return nDst, nSrc, errShort
			}
			return copyN(dst, src, nDst, nSrc, len(src)-nSrc)
		}
		if r, ok := hexRune(src[nSrc+2 : nSrc+6]); ok && plainRune(r) {
			if nDst >= len(dst) {
				return nDst, nSrc, transform.ErrShortDst
			}
			dst[nDst] = byte(r)
			nDst++
			nSrc += 6
			continue
		}
		nd, ns, err := copyN(dst, src, nDst, nSrc, 6)
		if err != nil {
			return nd, ns, err
		}
		nDst, nSrc = nd, ns
	}
	return nDst, nSrc, nil
}

func copyN(dst, src []byte, nDst, nSrc, n int) (int, int, error) {
	if nDst+n > len(dst) {
		return nDst, nSrc, transform.ErrShortDst
	}
	copy(dst[nDst:], src[nSrc:nSrc+n])
	return nDst + n, nSrc + n, nil
}

func hexRune(b []byte) (rune, bool) {
	var r rune
	for _, c := range b {
		if !isHexDigit(c) {
			return 0, false
		}
		r = r<<4 | rune(unhex(c))
	}
	return r, true
}

func plainRune(r rune) bool {
	switch {
	case r >= '0' && r <= '9', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		return true
	}
	switch r {
	case '@', '.', '-', '_', '+', ':', '/', ' ':
		return true
	}
	return false
}

// Streamer rewrites a body too large to hold, with bounded memory, by its
// kind: a form pair by pair (Field on each name and value), a multipart
// body part by part (Field on the header values, the part bodies streamed
// by their own type), JSON and text in segments (StreamText, Segment on
// each). The Content-Type to send is decided before the first byte is
// written (a multipart boundary that cannot be kept is replaced).
type Streamer struct {
	Segment  func(seg []byte, jsonRaw bool) ([]byte, error)
	Field    TextFunc
	Spans    SpanFunc
	MaxField int
	depth    int
}

// Prepare returns the Content-Type the streamed body will be sent with.
func (st *Streamer) Prepare(contentType string) (string, error) {
	if KindOf(contentType) != KindMultipart {
		return contentType, nil
	}
	in, err := boundaryOf(contentType)
	if err != nil {
		return "", err
	}
	if KeepBoundary(in, st.Field) {
		return contentType, nil
	}
	mt, params, _ := mime.ParseMediaType(contentType)
	params["boundary"] = FreshBoundary()
	return mime.FormatMediaType(mt, params), nil
}

// Stream copies the body from src to dst; sendCT is what Prepare returned
// for contentType.
func (st *Streamer) Stream(dst io.Writer, src io.Reader, contentType, sendCT string) error {
	if st.MaxField <= 0 {
		st.MaxField = DefaultMaxScan
	}
	_, err := st.streamAs(dst, src, contentType, sendCT)
	return err
}

func (st *Streamer) stream(dst io.Writer, src io.Reader, contentType string, keepBoundary bool) (string, error) {
	send := contentType
	if !keepBoundary {
		var err error
		if send, err = st.Prepare(contentType); err != nil {
			return "", err
		}
	} else if KindOf(contentType) == KindMultipart {
		in, err := boundaryOf(contentType)
		if err != nil {
			return "", err
		}
		if !KeepBoundary(in, st.Field) {
			return "", fmt.Errorf("%w: nested boundary cannot be kept", ErrMultipart)
		}
	}
	return st.streamAs(dst, src, contentType, send)
}

func (st *Streamer) streamAs(dst io.Writer, src io.Reader, contentType, sendCT string) (string, error) {
	switch KindOf(contentType) {
	case KindForm:
		return sendCT, RewriteForm(dst, src, st.MaxField, st.Field)
	case KindMultipart:
		if st.depth >= MaxMultipartDepth {
			return "", fmt.Errorf("%w: nested deeper than %d", ErrMultipart, MaxMultipartDepth)
		}
		in, err := boundaryOf(contentType)
		if err != nil {
			return "", err
		}
		out, err := boundaryOf(sendCT)
		if err != nil {
			return "", err
		}
		err = RewriteMultipart(dst, src, in, out, st.Field, func(h textproto.MIMEHeader, r io.Reader, w io.Writer) error {
			return st.part(h, r, w)
		})
		return sendCT, err
	}
	isJSON := KindOf(contentType) == KindJSON
	seg := func(b []byte) ([]byte, error) { return st.Segment(b, isJSON) }
	return sendCT, StreamText(dst, src, contentType, seg, st.Spans)
}

func (st *Streamer) part(h textproto.MIMEHeader, r io.Reader, w io.Writer) error {
	ct := h.Get("Content-Type")
	if ct == "" {
		ct = "text/plain"
	}
	r, enc := transferCoding(h, ct, r, w)
	sub := *st
	sub.depth++
	if _, err := sub.stream(enc, r, ct, true); err != nil {
		return err
	}
	return enc.Close()
}

// SpanFuncOf returns a SpanFunc over the fast types of the PII stage among
// stages (nil without one), for StreamText's segment ends.
func SpanFuncOf(stages []Stage) SpanFunc {
	for _, s := range stages {
		if p, ok := s.(*PIIStage); ok {
			f := &Finder{Scanner: p.Scanner, Types: p.Types}
			return f.spans
		}
	}
	return nil
}

// ErrBlocked is returned through a stream when a stage blocked a segment.
var ErrBlocked = errors.New("blocked by a stage")
