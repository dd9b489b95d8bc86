package envd

import "unicode/utf8"

// utf8Carry turns a byte stream into text chunks without splitting a
// UTF-8 sequence across chunks: an incomplete sequence at the end of a
// chunk is held back and prepended to the next one. Invalid bytes are
// passed through (JSON encoding turns them into U+FFFD).
type utf8Carry struct {
	pending []byte // at most utf8.UTFMax-1 bytes
}

// split returns the text of carry+data up to the last complete rune.
func (c *utf8Carry) split(data []byte) string {
	b := data
	if len(c.pending) > 0 {
		b = append(c.pending, data...)
		c.pending = nil
	}
	cut := len(b)
	for i := len(b) - 1; i >= 0 && i >= len(b)-(utf8.UTFMax-1); i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				cut = i
			}
			break
		}
	}
	if cut < len(b) {
		c.pending = append([]byte(nil), b[cut:]...)
	}
	return string(b[:cut])
}

// flush returns whatever is held back.
func (c *utf8Carry) flush() string {
	s := string(c.pending)
	c.pending = nil
	return s
}
