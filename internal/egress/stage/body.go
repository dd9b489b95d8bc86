package stage

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// DefaultMaxScan is the largest decoded body the pipeline buffers and
// scans (8 MiB). Larger bodies are passed through unscanned (and audited
// "too large, not scanned"), or refused with 413 when a scanning stage's
// action is block (Pipeline.BlockOnUnscannable).
const DefaultMaxScan = 8 << 20

// MaxZstdWindow bounds a zstd frame's window (memory held while decoding).
const MaxZstdWindow = 8 << 20

// Errors of ReadBody.
var (
	ErrTooLarge    = errors.New("body too large to scan")
	ErrUnsupported = errors.New("unsupported content encoding")
	// ErrDecode wraps a body that does not decode as its Content-Encoding
	// claims (corrupt gzip, truncated zstd...).
	ErrDecode = errors.New("body does not decode")
)

// Decodable reports whether every coding in a Content-Encoding value is
// one the proxy decodes (gzip, x-gzip, deflate, br, zstd, identity).
func Decodable(contentEncoding string) bool {
	for _, c := range codings(contentEncoding) {
		switch c {
		case "gzip", "x-gzip", "deflate", "br", "zstd", "identity":
		default:
			return false
		}
	}
	return true
}

func codings(ce string) []string {
	var out []string
	for _, c := range strings.Split(ce, ",") {
		if c = strings.ToLower(strings.TrimSpace(c)); c != "" {
			out = append(out, c)
		}
	}
	return out
}

// Decoder wraps r to undo contentEncoding (codings applied in order, so
// undone in reverse).
func Decoder(r io.Reader, contentEncoding string) (io.Reader, error) {
	cs := codings(contentEncoding)
	for i := len(cs) - 1; i >= 0; i-- {
		switch cs[i] {
		case "identity":
		case "gzip", "x-gzip":
			zr, err := gzip.NewReader(r)
			if err != nil {
				return nil, fmt.Errorf("gzip: %w", err)
			}
			r = zr
		case "deflate":
			// "deflate" is zlib-wrapped per RFC 9110; some servers send raw
			// DEFLATE: peek at the zlib header to tell them apart.
			br := &peekReader{r: r}
			hdr, _ := br.peek(2)
			if len(hdr) == 2 && hdr[0]&0x0f == 8 && (uint16(hdr[0])<<8|uint16(hdr[1]))%31 == 0 {
				zr, err := zlib.NewReader(br)
				if err != nil {
					return nil, fmt.Errorf("deflate: %w", err)
				}
				r = zr
			} else {
				r = flate.NewReader(br)
			}
		case "br":
			r = brotli.NewReader(r)
		case "zstd":
			// A bounded window: a hostile frame cannot make the decoder
			// allocate more than this (RFC 9659 recommends 8 MiB).
			zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(MaxZstdWindow), zstd.WithDecoderLowmem(true))
			if err != nil {
				return nil, fmt.Errorf("zstd: %w", err)
			}
			r = zr.IOReadCloser()
		default:
			return nil, fmt.Errorf("%w: %q", ErrUnsupported, cs[i])
		}
	}
	return r, nil
}

type peekReader struct {
	r   io.Reader
	buf []byte
}

func (p *peekReader) peek(n int) ([]byte, error) {
	for len(p.buf) < n {
		b := make([]byte, n-len(p.buf))
		k, err := p.r.Read(b)
		p.buf = append(p.buf, b[:k]...)
		if err != nil {
			return p.buf, err
		}
	}
	return p.buf, nil
}

func (p *peekReader) Read(b []byte) (int, error) {
	if len(p.buf) > 0 {
		n := copy(b, p.buf)
		p.buf = p.buf[n:]
		return n, nil
	}
	return p.r.Read(b)
}

// ReadBody reads and decodes a body of at most max decoded bytes. On
// ErrTooLarge it returns the raw (still encoded) bytes it consumed, so the
// caller can send them on followed by the rest of r.
func ReadBody(r io.Reader, contentEncoding string, max int64) (decoded, consumed []byte, err error) {
	if !Decodable(contentEncoding) {
		return nil, nil, fmt.Errorf("%w: %q", ErrUnsupported, contentEncoding)
	}
	var raw bytes.Buffer
	tee := io.TeeReader(r, &raw)
	if len(codings(contentEncoding)) == 0 || strings.EqualFold(strings.TrimSpace(contentEncoding), "identity") {
		b, err := io.ReadAll(io.LimitReader(tee, max+1))
		if err != nil {
			return nil, raw.Bytes(), err
		}
		if int64(len(b)) > max {
			return nil, raw.Bytes(), ErrTooLarge
		}
		return b, nil, nil
	}
	// Encoded: the raw body is bounded too (a compressed body larger than
	// the limit cannot decode to less, except for pathological streams).
	dec, err := Decoder(io.LimitReader(tee, max+1), contentEncoding)
	if err != nil {
		return nil, raw.Bytes(), err
	}
	b, err := io.ReadAll(io.LimitReader(dec, max+1))
	if int64(len(b)) > max || int64(raw.Len()) > max {
		return nil, raw.Bytes(), ErrTooLarge
	}
	if err != nil {
		return nil, raw.Bytes(), fmt.Errorf("%w: %s: %w", ErrDecode, contentEncoding, err)
	}
	// Drain what the decoder left (trailing bytes after the stream end).
	if _, err := io.Copy(io.Discard, io.LimitReader(tee, max+1-int64(raw.Len()))); err != nil {
		return nil, raw.Bytes(), err
	}
	if int64(raw.Len()) > max {
		return nil, raw.Bytes(), ErrTooLarge
	}
	return b, nil, nil
}
