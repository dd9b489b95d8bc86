package pii

// ibanLength is the IBAN length per country (ISO 13616 registry).
var ibanLength = map[string]int{
	"AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
	"BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
	"ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
	"HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
	"LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
	"MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
	"RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
	"TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}

// tryIBAN checks for an IBAN at i (two letters, two check digits, then the
// country's BBAN length of alphanumerics, optionally in space-separated
// groups of four). It returns the end, also of a candidate that fails the
// check (no span then), or -1.
func (st *scanState) tryIBAN(i int) int {
	t := st.text
	want, ok := ibanLength[string([]byte{upper(t[i]), upper(t[i+1])})]
	if !ok {
		return -1
	}
	var buf [34]byte
	b := buf[:0]
	j := i
	for j < len(t) && len(b) < want {
		c := t[j]
		switch {
		case isAlnum(c):
			b = append(b, upper(c))
			j++
		case c == ' ' && j+1 < len(t) && isAlnum(t[j+1]) && len(b)%4 == 0 && len(b) > 0:
			j++
		default:
			return -1
		}
	}
	if len(b) != want || j < len(t) && wordChar(t[j]) {
		return -1
	}
	if !mod97(b) {
		// IBAN-shaped (country, check digits, the country's length) with
		// a wrong check: no IBAN, and none of its digit groups is offered
		// to the other recognisers (a card or phone inside a mistyped
		// IBAN is not one either).
		return j
	}
	score := 0.9
	if hasWordBefore(t, i, ctxIBAN) {
		score = 1
	}
	st.add(Span{Type: IBAN, Start: i, End: j, Score: score})
	return j
}

// mod97 applies the ISO 7064 check: move the first four characters to the
// end, map letters to 10..35, and the number mod 97 must be 1.
func mod97(b []byte) bool {
	if len(b) < 5 {
		return false
	}
	rem := 0
	feed := func(c byte) bool {
		switch {
		case c >= '0' && c <= '9':
			rem = (rem*10 + int(c-'0')) % 97
		case c >= 'A' && c <= 'Z':
			v := int(c-'A') + 10
			rem = (rem*100 + v) % 97
		default:
			return false
		}
		return true
	}
	for _, c := range b[4:] {
		if !feed(c) {
			return false
		}
	}
	for _, c := range b[:4] {
		if !feed(c) {
			return false
		}
	}
	return rem == 1
}
