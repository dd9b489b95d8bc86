package stage

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

func encode(t *testing.T, coding string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch coding {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "deflate":
		w = zlib.NewWriter(&buf)
	case "raw-deflate":
		w, _ = flate.NewWriter(&buf, flate.DefaultCompression)
	case "br":
		w = brotli.NewWriter(&buf)
	case "zstd":
		w, _ = zstd.NewWriter(&buf)
	default:
		return b
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func TestReadBody(t *testing.T) {
	plain := []byte(strings.Repeat("hello jane.doe@example.org ", 100))
	for _, tc := range []struct{ coding, header string }{
		{"", ""}, {"", "identity"}, {"gzip", "gzip"}, {"deflate", "deflate"}, {"raw-deflate", "deflate"}, {"br", "br"}, {"gzip", "x-gzip"}, {"zstd", "zstd"}, {"gzip", "gzip, identity"},
	} {
		t.Run(tc.coding+"/"+tc.header, func(t *testing.T) {
			got, _, err := ReadBody(bytes.NewReader(encode(t, tc.coding, plain)), tc.header, 1<<20)
			if err != nil || !bytes.Equal(got, plain) {
				t.Errorf("ReadBody(%s) = %d bytes, %v", tc.header, len(got), err)
			}
		})
	}
	t.Run("too large keeps the raw bytes", func(t *testing.T) {
		raw := encode(t, "gzip", plain)
		dec, consumed, err := ReadBody(bytes.NewReader(raw), "gzip", 100)
		if !errors.Is(err, ErrTooLarge) || dec != nil {
			t.Fatalf("err %v", err)
		}
		if !bytes.HasPrefix(raw, consumed) {
			t.Error("consumed bytes are not a prefix of the raw body")
		}
	})
	t.Run("bomb is bounded", func(t *testing.T) {
		raw := encode(t, "gzip", make([]byte, 64<<20))
		_, _, err := ReadBody(bytes.NewReader(raw), "gzip", 1<<20)
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("64 MiB of zeros under a 1 MiB limit: %v", err)
		}
	})
	t.Run("unsupported", func(t *testing.T) {
		if _, _, err := ReadBody(strings.NewReader("x"), "compress", 10); !errors.Is(err, ErrUnsupported) {
			t.Errorf("compress: %v", err)
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		if _, _, err := ReadBody(strings.NewReader("not gzip at all"), "gzip", 1<<20); err == nil || errors.Is(err, ErrTooLarge) {
			t.Errorf("corrupt gzip: %v", err)
		}
	})
}
