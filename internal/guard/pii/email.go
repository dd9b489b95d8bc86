package pii

import "strings"

// commonTLDs are the generic top-level domains accepted for email; any
// two-letter (country-code) TLD is accepted as well.
var commonTLDs = func() map[string]bool {
	m := map[string]bool{}
	for _, s := range strings.Fields(`com net org edu gov mil int info biz name pro mobi aero coop museum
		io ai app dev cloud tech online site store shop blog email mail xyz top club live news
		agency company digital network solutions systems services group global world media
		design studio life today space website page zone work link click host page one
		inc ltd llc law legal health care bank finance money capital fund
		school academy college university church art music games social family
		local localhost test example internal corp home lan`) {
		m[s] = true
	}
	return m
}()

func isLocalChar(c byte) bool {
	return isAlnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'
}

func isDomainChar(c byte) bool { return isAlnum(c) || c == '.' || c == '-' }

// scanEmails finds addresses around each '@'.
func (st *scanState) scanEmails() {
	t := st.text
	n := len(t)
	for off := 0; off < n; {
		k := strings.IndexByte(t[off:], '@')
		if k < 0 {
			return
		}
		at := off + k
		off = at + 1
		s := at
		for s > 0 && isLocalChar(t[s-1]) && at-s < 64 {
			s--
		}
		for s < at && (t[s] == '.' || t[s] == '-' || t[s] == '+') {
			s++
		}
		if s == at || t[at-1] == '.' || strings.Contains(t[s:at], "..") {
			continue
		}
		e := at + 1
		for e < n && isDomainChar(t[e]) && e-at <= 253 {
			e++
		}
		for e > at+1 && (t[e-1] == '.' || t[e-1] == '-') {
			e--
		}
		if e < n && wordChar(t[e]) || !validDomain(t[at+1:e]) {
			continue
		}
		score := 0.85
		if hasWordBefore(t, s, ctxEmail) {
			score = 1
		}
		st.add(Span{Type: Email, Start: s, End: e, Score: score})
		off = e
	}
}

func validDomain(d string) bool {
	if len(d) < 4 || strings.Contains(d, "..") {
		return false
	}
	labels := 0
	last := ""
	for len(d) > 0 {
		i := strings.IndexByte(d, '.')
		var l string
		if i < 0 {
			l, d = d, ""
		} else {
			l, d = d[:i], d[i+1:]
		}
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		labels++
		last = l
	}
	if labels < 2 {
		return false
	}
	for i := 0; i < len(last); i++ {
		if !isAlpha(last[i]) {
			return strings.HasPrefix(last, "xn--")
		}
	}
	if len(last) == 2 {
		return true
	}
	return commonTLDs[strings.ToLower(last)]
}
