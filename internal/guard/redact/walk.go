package redact

// walkJSON validates b as one JSON value (RFC 8259 grammar, as
// encoding/json.Valid accepts it) and calls fn for every string with the
// offsets of its opening and closing quotes, reporting whether it is an
// object key. It returns false for invalid input; fn may have been called
// for a prefix by then. Nesting uses an explicit stack, so depth is not
// limited by the goroutine stack.
func walkJSON(b []byte, fn func(open, close int, key bool)) bool {
	var stack []byte
	i := skipWS(b, 0)
value:
	for {
		if i >= len(b) {
			return false
		}
		switch c := b[i]; {
		case c == '{':
			i = skipWS(b, i+1)
			if i < len(b) && b[i] == '}' {
				i++
				break
			}
			stack = append(stack, '{')
			var ok bool
			if i, ok = objectKey(b, i, fn); !ok {
				return false
			}
			continue value
		case c == '[':
			i = skipWS(b, i+1)
			if i < len(b) && b[i] == ']' {
				i++
				break
			}
			stack = append(stack, '[')
			continue value
		case c == '"':
			e, ok := stringEnd(b, i)
			if !ok {
				return false
			}
			fn(i, e, false)
			i = e + 1
		case c == 't':
			if !hasLit(b, i, "true") {
				return false
			}
			i += 4
		case c == 'f':
			if !hasLit(b, i, "false") {
				return false
			}
			i += 5
		case c == 'n':
			if !hasLit(b, i, "null") {
				return false
			}
			i += 4
		case c == '-' || c >= '0' && c <= '9':
			e, ok := numberEnd(b, i)
			if !ok {
				return false
			}
			i = e
		default:
			return false
		}
		// After a value: close containers or move to the next element.
		for {
			i = skipWS(b, i)
			if len(stack) == 0 {
				return i == len(b)
			}
			if i >= len(b) {
				return false
			}
			top := stack[len(stack)-1]
			switch b[i] {
			case ',':
				i = skipWS(b, i+1)
				if top == '{' {
					var ok bool
					if i, ok = objectKey(b, i, fn); !ok {
						return false
					}
				}
				continue value
			case '}':
				if top != '{' {
					return false
				}
			case ']':
				if top != '[' {
					return false
				}
			default:
				return false
			}
			stack = stack[:len(stack)-1]
			i++
		}
	}
}

// objectKey parses `"key" :` at i and returns the index after the colon
// (and whitespace).
func objectKey(b []byte, i int, fn func(int, int, bool)) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return 0, false
	}
	e, ok := stringEnd(b, i)
	if !ok {
		return 0, false
	}
	fn(i, e, true)
	i = skipWS(b, e+1)
	if i >= len(b) || b[i] != ':' {
		return 0, false
	}
	return skipWS(b, i+1), true
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

func hasLit(b []byte, i int, lit string) bool {
	return len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit
}

// strSpecial marks bytes that end the fast path inside a string.
var strSpecial = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// stringEnd returns the index of the closing quote of the string whose
// opening quote is at i.
func stringEnd(b []byte, i int) (int, bool) {
	j := i + 1
	for j < len(b) {
		c := b[j]
		if !strSpecial[c] {
			j++
			continue
		}
		switch {
		case c == '"':
			return j, true
		case c < 0x20:
			return 0, false
		}
		// backslash
		if j+1 >= len(b) {
			return 0, false
		}
		switch b[j+1] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			j += 2
		case 'u':
			if j+6 > len(b) {
				return 0, false
			}
			for _, h := range b[j+2 : j+6] {
				if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
					return 0, false
				}
			}
			j += 6
		default:
			return 0, false
		}
	}
	return 0, false
}

// numberEnd returns the index after the number starting at i.
func numberEnd(b []byte, i int) (int, bool) {
	digits := func(j int) int {
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		return j
	}
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(i + 1)
	default:
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return 0, false
		}
		i = j
	}
	return i, true
}
