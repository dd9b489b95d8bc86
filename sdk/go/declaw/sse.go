package declaw

import (
	"bufio"
	"bytes"
	"io"
	"strings"
)

// maxSSELine bounds one SSE line (a data line carries one output chunk).
const maxSSELine = 64 << 20

// Event is one server-sent event.
type Event struct {
	Name string // the "event:" field; empty when absent
	Data string // the "data:" lines joined with "\n"
	ID   string
}

// SSEReader reads server-sent events: lines end with "\n", "\r\n" or
// "\r"; a blank line ends an event; lines starting with ":" are comments;
// several "data:" lines are joined with "\n". An event cut off by the end
// of the stream (no blank line after it) is still returned.
type SSEReader struct {
	sc *bufio.Scanner
}

// NewSSEReader returns a reader of the events in r.
func NewSSEReader(r io.Reader) *SSEReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxSSELine)
	sc.Split(splitSSELines)
	return &SSEReader{sc: sc}
}

// Next returns the next event, or io.EOF at the end of the stream.
func (r *SSEReader) Next() (Event, error) {
	var ev Event
	var data strings.Builder
	pending, hasData := false, false
	for r.sc.Scan() {
		line := r.sc.Bytes()
		if len(line) == 0 {
			if pending {
				ev.Data = data.String()
				return ev, nil
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "event":
			ev.Name, pending = string(value), true
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.Write(value)
			hasData, pending = true, true
		case "id":
			ev.ID, pending = string(value), true
		}
	}
	if err := r.sc.Err(); err != nil {
		return Event{}, err
	}
	if pending {
		ev.Data = data.String()
		return ev, nil
	}
	return Event{}, io.EOF
}

// splitSSELines is a bufio.SplitFunc for "\n", "\r\n" and "\r" line ends.
func splitSSELines(data []byte, atEOF bool) (int, []byte, error) {
	i := bytes.IndexAny(data, "\r\n")
	if i < 0 {
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	}
	if data[i] == '\n' {
		return i + 1, data[:i], nil
	}
	// '\r': a following '\n' belongs to the same line end.
	if i+1 < len(data) {
		if data[i+1] == '\n' {
			return i + 2, data[:i], nil
		}
		return i + 1, data[:i], nil
	}
	if atEOF {
		return i + 1, data[:i], nil
	}
	return 0, nil, nil // need one more byte
}
