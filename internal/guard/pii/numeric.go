package pii

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/declaw/declaw/internal/guard/secrets"

	"github.com/nyaruka/phonenumbers"
)

// DefaultPhoneRegions are tried, in order, for phone candidates without an
// international prefix (Presidio's list plus a few European ones).
var DefaultPhoneRegions = []string{"US", "GB", "DE", "FR", "IL", "IN", "CA", "BR", "AU", "CH", "SE", "IT", "ES", "NL"}

// scanWords walks the text once, visiting each token start: digit runs go
// to the numeric recognisers (SSN, card, phone, IPv4), letter pairs
// followed by digits to IBAN, and short hex words followed by ':' to IPv6.
func (st *scanState) scanWords() {
	t := st.text
	n := len(t)
	wantPhone, wantIP, wantIBAN := st.mask.has(Phone), st.mask.has(IPAddress), st.mask.has(IBAN)
	wantKey := st.mask.has(APIKey)
	wantNum := st.mask&(typeBit(Phone)|typeBit(SSN)|typeBit(CreditCard)|typeBit(IPAddress)) != 0
	for i := 0; i < n; {
		c := t[i]
		if wantKey && secrets.MayStart(c) && i+1 < n && secrets.MayStartPair(c, t[i+1]) {
			if f, ok := secrets.MatchAt(t, i); ok {
				st.addSecret(f)
				i = f.End
				continue
			}
		}
		if !wordChar(c) {
			if (c == '+' || c == '(') && wantPhone && i+1 < n && isDigit(t[i+1]) && (i == 0 || !wordChar(t[i-1])) {
				if c == '(' && !closesGroup(t, i+1) {
					// "(4111 1111 ...)": the parenthesis is punctuation,
					// not an area code.
					i++
					continue
				}
				i = st.numeric(i, i+1)
				continue
			}
			i++
			continue
		}
		// A token starts at i; find its end.
		j := i + 1
		for j < n && wordChar(t[j]) {
			j++
		}
		if wantIP && j < n && t[j] == ':' && j-i <= 4 && allHex(t[i:j]) {
			if e := st.tryIPv6(i); e > 0 {
				i = e
				continue
			}
		}
		if isDigit(c) {
			k := i + 1
			for k < j && isDigit(t[k]) {
				k++
			}
			// Digits glued to letters ("4B", "2nd", "9b1e") are no
			// candidate; an 'x' may start a phone extension.
			if !wantNum || k < j && t[k] != 'x' && t[k] != 'X' {
				i = j
			} else {
				i = st.numeric(i, i)
			}
			continue
		}
		if wantIBAN && j-i >= 4 && isAlpha(c) && isAlpha(t[i+1]) && isDigit(t[i+2]) && isDigit(t[i+3]) {
			if e := st.tryIBAN(i); e > 0 {
				i = e
				continue
			}
		}
		i = j
	}
}

// closesGroup reports whether the digits starting at i are followed by ')'
// after at most 5 digits, as in "(415) 555-0100" or "(0)8".
func closesGroup(t string, i int) bool {
	j := i
	for j < len(t) && j-i <= 5 && isDigit(t[j]) {
		j++
	}
	return j < len(t) && t[j] == ')'
}

func allHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

// glueByte reports separators ('-', '.', '_', ':', '/', '\\', '@') that
// join a token to alphanumerics beyond them, as in UUIDs, version strings,
// times and paths.
func glueByte(c byte) bool {
	return c == '-' || c == '.' || c == '_' || c == ':' || c == '/' || c == '\\' || c == '@'
}

// numeric examines the digit chunk starting at digit index d (cs is d, or
// d-1 when the chunk opens with '+' or '('). It returns where scanning
// resumes.
func (st *scanState) numeric(cs, d int) int {
	t := st.text
	n := len(t)
	// Extend over digits and short separator runs.
	var groups [24]int // start index of each digit group
	var gends [24]int
	ng := 0
	j := d
	for j < n && ng < len(groups) {
		gs := j
		for j < n && isDigit(t[j]) {
			j++
		}
		groups[ng], gends[ng] = gs, j
		ng++
		// Separator run: at most two of " -.()", not ". " and then a digit.
		k := j
		for k < n && k-j < 2 && (t[k] == ' ' || t[k] == '-' || t[k] == '.' || t[k] == '(' || t[k] == ')') {
			k++
		}
		if k == j || k >= n || !isDigit(t[k]) || (k-j == 2 && (t[j] == t[j+1] || t[j] == '.' || t[j+1] == '.' || t[j] == '-' && t[j+1] == '-')) {
			break
		}
		j = k
	}
	ce := gends[ng-1]
	// A chunk glued to letters or to other tokens is not a candidate.
	if ce < n && (wordChar(t[ce]) && t[ce] != 'x' && t[ce] != 'X' || glueByte(t[ce]) && ce+1 < n && isAlnum(t[ce+1])) {
		return skipToken(t, ce)
	}
	if cs > 1 && glueByte(t[cs-1]) && isAlnum(t[cs-2]) {
		return skipToken(t, ce)
	}
	for g := ng; g > 0; g-- {
		end := gends[g-1]
		if g < ng && t[end] != ' ' && t[end] != ')' {
			continue // only shrink at spaces
		}
		if e := st.classify(cs, d, groups[:g], gends[:g], g == ng); e > 0 {
			return e
		}
	}
	return ce
}

func skipToken(t string, i int) int {
	for i < len(t) && (wordChar(t[i]) || glueByte(t[i]) && i+1 < len(t) && isAlnum(t[i+1])) {
		i++
	}
	return i
}

// emit adds sp if its type was asked for. The numeric validators run for
// every type so that, say, a card number is never offered to the phone
// recogniser when only phones are wanted.
func (st *scanState) emit(sp Span) {
	if st.mask.has(sp.Type) {
		st.add(sp)
	}
}

// classify tries each numeric type on the chunk t[cs:gends[last]] made of
// the given digit groups; it returns the end of an accepted span or -1.
func (st *scanState) classify(cs, d int, gs, ge []int, whole bool) int {
	t := st.text
	ng := len(gs)
	end := ge[ng-1]
	digits := 0
	for k := range gs {
		digits += ge[k] - gs[k]
	}
	sep := byte(0) // the separator when all separators are one byte and equal
	uniform := true
	for k := 1; k < ng; k++ {
		if gs[k]-ge[k-1] != 1 {
			uniform = false
			break
		}
		c := t[ge[k-1]]
		if sep == 0 {
			sep = c
		} else if c != sep {
			uniform = false
		}
	}
	plain := cs == d // no leading '+' or '('
	negDone, negVal := false, false
	neg := func() bool {
		if !negDone {
			negDone, negVal = true, hasWordBefore(t, cs, negNumber)
		}
		return negVal
	}

	// IPv4: four dot-separated groups.
	if plain && ng == 4 && uniform && sep == '.' {
		if a, err := netip.ParseAddr(t[cs:end]); err == nil && a.Is4() {
			score := 0.75
			small := true
			for k := range gs {
				if ge[k]-gs[k] > 1 {
					small = false
				}
			}
			if small {
				score = 0.4 // 1.2.3.4 looks like a version
			}
			if hasWordBefore(t, cs, ctxIP) {
				score += 0.2
			}
			if hasWordBefore(t, cs, negIP) {
				score = 0
			}
			if score > 0 {
				st.emit(Span{Type: IPAddress, Start: cs, End: end, Score: score})
				return end
			}
			return end
		}
	}
	// SSN: 3-2-4 with one separator, or nine bare digits with context.
	if plain && digits == 9 {
		dashed := ng == 3 && uniform && (sep == '-' || sep == ' ' || sep == '.') && ge[0]-gs[0] == 3 && ge[1]-gs[1] == 2
		if dashed || ng == 1 {
			raw := digitsOf(t[cs:end])
			if validSSN(raw) {
				score := 0.3
				if dashed {
					score = 0.55
					if sep == '-' {
						score = 0.65
					}
				}
				// A formatted SSN (3-2-4) with a valid area, group and
				// serial is redacted whatever the words around it: context
				// raises the score, never lowers it. Nine bare digits are
				// any identifier's shape: they need an SSN word, and an
				// "order"/"invoice" word vetoes them.
				if hasWordBefore(t, cs, ctxSSN) {
					score += 0.35
				} else if !dashed && neg() {
					score -= 0.4
				}
				if score >= 0.5 {
					st.emit(Span{Type: SSN, Start: cs, End: end, Score: score})
					return end
				}
			}
		}
	}
	// Payment card: 12-19 digits, Luhn, a known IIN range with a length
	// that issuer uses, and, when grouped, a grouping cards are printed
	// in (cardGrouping). A valid number is redacted whatever the words
	// around it ("order id 4111 ..." included): context raises the
	// score, never lowers it.
	if plain && digits >= 12 && digits <= 19 && (ng == 1 || uniform && (sep == ' ' || sep == '-') && cardGrouping(gs, ge)) {
		raw := digitsOf(t[cs:end])
		if luhn(raw) && validIIN(raw) && !allSame(raw) {
			score := 0.8
			if hasWordBefore(t, cs, ctxCard) {
				score += 0.2
			}
			st.emit(Span{Type: CreditCard, Start: cs, End: end, Score: score})
			return end
		}
	}
	// Phone: 7-15 digits, valid in some region per libphonenumber.
	// Phones are tried on the whole chunk only: libphonenumber parsing is
	// the costliest validator, and shortened chunks are rarely numbers.
	if whole && st.mask.has(Phone) && digits >= 7 && digits <= 15 {
		if e := st.tryPhone(cs, d, end, gs, ge, digits, sep, uniform, neg); e > 0 {
			return e
		}
	}
	return -1
}

func (st *scanState) tryPhone(cs, d, end int, gs, ge []int, digits int, sep byte, uniform bool, neg func() bool) int {
	t := st.text
	ng := len(gs)
	if isDateShape(t, gs, ge, sep, uniform) {
		return -1
	}
	idd := strings.HasPrefix(t[cs:], "00") || strings.HasPrefix(t[cs:], "011")
	if cs == d && (digits > 12 && !idd || ng == 3 && ge[0]-gs[0] == 3 && ge[1]-gs[1] == 2 && ge[2]-gs[2] == 4) {
		// No national number has more than 12 digits (card lengths
		// start at 13; an international one dialled with 00 or 011 may),
		// and 3-2-4 is the SSN's shape, not a phone's: a card or SSN that
		// failed its validation is not rescued as a phone number.
		return -1
	}
	ctx := hasWordBefore(t, cs, ctxPhone)
	if cs == d && !ctx && (digits < 10 || ng == 1 && digits > 11) {
		// Short local numbers look like house numbers, postcodes and
		// counts; without a phone word nearby they are not flagged.
		return -1
	}
	// Optional extension: x123, ext 123, ext. 123.
	pend := end
	if k := extensionEnd(t, end); k > 0 {
		pend = k
	} else if end < len(t) && wordChar(t[end]) {
		return -1
	}
	cand := t[cs:pend]
	// Valid per libphonenumber metadata scores 0.6; merely possible
	// (right length for the country) is accepted only with an explicit
	// '+' country code or a phone word nearby.
	valid, possible := false, false
	if t[cs] == '+' {
		// An explicit country code plus a length the country allows is
		// strong evidence; the per-region validity patterns (the costly
		// part of libphonenumber) are not consulted.
		if num, ok := parseInternational(t[cs:end]); ok {
			valid = phonenumbers.IsPossibleNumber(num)
		}
	} else {
		for _, r := range st.regions {
			num, err := phonenumbers.Parse(cand, r)
			if err != nil {
				continue
			}
			if phonenumbers.IsValidNumberForRegion(num, r) {
				valid = true
				break
			}
			possible = possible || phonenumbers.IsPossibleNumber(num)
		}
	}
	score := 0.0
	switch {
	case valid && ctx:
		score = 0.85
	case valid:
		score = 0.6
	case possible && ctx:
		score = 0.7
	case possible && t[cs] == '+':
		score = 0.55
	}
	if !ctx && score > 0 && neg() {
		score -= 0.4
	}
	if score < 0.5 {
		return -1
	}
	st.add(Span{Type: Phone, Start: cs, End: pend, Score: score})
	return pend
}

func extensionEnd(t string, i int) int {
	j := i
	if j < len(t) && t[j] == ' ' {
		j++
	}
	switch {
	case j < len(t) && (t[j] == 'x' || t[j] == 'X'):
		j++
	case j+3 <= len(t) && (t[j:j+3] == "ext" || t[j:j+3] == "Ext"):
		j += 3
		if j < len(t) && t[j] == '.' {
			j++
		}
		if j < len(t) && t[j] == ' ' {
			j++
		}
	default:
		return -1
	}
	k := j
	for k < len(t) && isDigit(t[k]) && k-j < 6 {
		k++
	}
	if k == j || k < len(t) && wordChar(t[k]) {
		return -1
	}
	return k
}

// isDateShape reports chunks shaped like dates: 2024-01-31, 31.01.2024,
// 01-31-2024, 2024.01.31.
func isDateShape(t string, gs, ge []int, sep byte, uniform bool) bool {
	if len(gs) != 3 || !uniform || (sep != '-' && sep != '.' && sep != ' ') {
		return false
	}
	l0, l1, l2 := ge[0]-gs[0], ge[1]-gs[1], ge[2]-gs[2]
	num := func(k int) int {
		v := 0
		for i := gs[k]; i < ge[k]; i++ {
			v = v*10 + int(t[i]-'0')
		}
		return v
	}
	switch {
	case l0 == 4 && l1 <= 2 && l2 <= 2:
		return num(1) >= 1 && num(1) <= 12 && num(2) >= 1 && num(2) <= 31
	case l0 <= 2 && l1 <= 2 && l2 == 4:
		a, b := num(0), num(1)
		return a >= 1 && b >= 1 && (a <= 31 && b <= 12 || a <= 12 && b <= 31)
	}
	return false
}

func digitsOf(s string) string {
	var buf [40]byte
	b := buf[:0]
	for i := 0; i < len(s) && len(b) < len(buf); i++ {
		if isDigit(s[i]) {
			b = append(b, s[i])
		}
	}
	return string(b)
}

func allSame(s string) bool {
	for i := 1; i < len(s); i++ {
		if s[i] != s[0] {
			return false
		}
	}
	return true
}

// validSSN applies the SSA rules: no area 000, 666 or 9xx, no group 00, no
// serial 0000. Well-known example numbers such as 123-45-6789 are valid
// here on purpose: they are what people paste, and a security proxy that
// lets them through looks broken (a missed redaction costs more than a
// needless one).
func validSSN(d string) bool {
	if len(d) != 9 || allSame(d) {
		return false
	}
	area, group, serial := d[:3], d[3:5], d[5:]
	if area == "000" || area == "666" || area[0] == '9' || group == "00" || serial == "0000" {
		return false
	}
	return true
}

// luhn reports whether the digit string passes the Luhn check.
func luhn(d string) bool {
	sum := 0
	dbl := false
	for i := len(d) - 1; i >= 0; i-- {
		v := int(d[i] - '0')
		if dbl {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
		dbl = !dbl
	}
	return sum%10 == 0
}

// validIIN checks the issuer prefix and length against the major card
// networks' published ranges.
// cardGrouping reports whether digit groups are laid out as card numbers
// are printed: fours with a shorter or equal last group (4-4-4-4,
// 4-4-4-4-3, 4-4-4-1), Amex's 4-6-5, Diners' 4-6-4, and the 6-13 of some
// 19-digit UnionPay and Maestro cards.
func cardGrouping(gs, ge []int) bool {
	n := len(gs)
	l := func(k int) int { return ge[k] - gs[k] }
	switch {
	case n == 3 && l(0) == 4 && l(1) == 6 && (l(2) == 5 || l(2) == 4):
		return true
	case n == 2 && l(0) == 6 && l(1) == 13:
		return true
	case n >= 3:
		for k := 0; k < n-1; k++ {
			if l(k) != 4 {
				return false
			}
		}
		return l(n-1) >= 1 && l(n-1) <= 4
	}
	return false
}

func validIIN(d string) bool {
	n := len(d)
	p := func(k int) int {
		v := 0
		for i := 0; i < k && i < n; i++ {
			v = v*10 + int(d[i]-'0')
		}
		return v
	}
	p1, p2, p3, p4, p6 := p(1), p(2), p(3), p(4), p(6)
	switch {
	case p1 == 4: // Visa
		return n == 13 || n == 16 || n == 19
	case p2 >= 51 && p2 <= 55, p4 >= 2221 && p4 <= 2720: // Mastercard
		return n == 16
	case p2 == 34 || p2 == 37: // Amex
		return n == 15
	case p2 == 36 || p2 == 38 || p2 == 39 || p3 >= 300 && p3 <= 305 || p4 == 3095: // Diners
		return n >= 14 && n <= 19
	case p2 == 35: // JCB (3528-3589 issued; generators use all of 35xx)
		return n >= 16 && n <= 19
	case p4 == 2131 || p4 == 1800: // JCB 15-digit
		return n == 15
	case p4 == 6011, p2 == 65, p3 >= 644 && p3 <= 649, p6 >= 622126 && p6 <= 622925: // Discover
		return n >= 16 && n <= 19
	case p2 == 62: // UnionPay
		return n >= 16 && n <= 19
	case p4 == 5018 || p4 == 5020 || p4 == 5038 || p4 == 5893 || p4 == 6304 || p4 == 6759 || p4 == 6761 || p4 == 6762 || p4 == 6763 || p4 == 604 || p4 == 6390 || p2 == 56 || p2 == 57 || p2 == 58: // Maestro (p4 604 is the 0604 prefix)
		return n >= 12 && n <= 19
	case p4 >= 2200 && p4 <= 2204: // Mir
		return n >= 16 && n <= 19
	case p2 == 60 || p2 == 67: // other 6x debit (Maestro/RuPay)
		return n >= 16 && n <= 19
	}
	return false
}

// tryIPv6 checks for an IPv6 address starting at i; it returns its end or -1.
func (st *scanState) tryIPv6(i int) int {
	t := st.text
	n := len(t)
	k := i
	for k < n && k-i < 5 && isHex(t[k]) {
		k++
	}
	if k == i || k-i > 4 || k >= n || t[k] != ':' {
		return -1
	}
	j := i
	colons := 0
	for j < n && j-i < 45 && (isHex(t[j]) || t[j] == ':' || t[j] == '.' && colons >= 2) {
		if t[j] == ':' {
			colons++
		}
		j++
	}
	for j > i && (t[j-1] == '.' || t[j-1] == ':' && !(j-2 > i && t[j-2] == ':')) {
		j--
	}
	if colons < 2 || j < n && wordChar(t[j]) {
		return -1
	}
	hexDigits := 0
	for k := i; k < j; k++ {
		if isHex(t[k]) {
			hexDigits++
		}
	}
	if hexDigits < 5 {
		return -1 // "a::b", "ab::cd": more likely C++ scopes than addresses
	}
	a, err := netip.ParseAddr(t[i:j])
	if err != nil || !a.Is6() {
		return -1
	}
	score := 0.85
	if hasWordBefore(t, i, ctxIP) {
		score = 1
	}
	st.add(Span{Type: IPAddress, Start: i, End: j, Score: score})
	return j
}

// parseInternational splits "+CC national" (separators and a "(0)" trunk
// marker allowed) into a PhoneNumber without libphonenumber's general
// parser, which is the slowest step of a scan. Country calling codes are
// prefix-free, so the first known 1-3 digit prefix is the country code.
func parseInternational(s string) (*phonenumbers.PhoneNumber, bool) {
	var buf [24]byte
	d := buf[:0]
	for i := 1; i < len(s) && len(d) < len(buf); i++ {
		if strings.HasPrefix(s[i:], "(0)") {
			i += 2
			continue
		}
		if isDigit(s[i]) {
			d = append(d, s[i])
		}
	}
	for l := 1; l <= 3 && l < len(d); l++ {
		cc, _ := strconv.Atoi(string(d[:l]))
		region := phonenumbers.GetRegionCodeForCountryCode(cc)
		if region == "ZZ" || region == "" {
			continue
		}
		if d[l] == '0' && region != "IT" {
			return nil, false // national numbers do not start with a trunk 0
		}
		nn, err := strconv.ParseUint(string(d[l:]), 10, 64)
		if err != nil {
			return nil, false
		}
		c32 := int32(cc)
		return &phonenumbers.PhoneNumber{CountryCode: &c32, NationalNumber: &nn}, true
	}
	return nil, false
}
