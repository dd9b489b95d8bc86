// Package pii finds personal data in text: email addresses, phone numbers,
// US social security numbers, payment card numbers, API keys, IP addresses,
// IBANs and, on a best-effort basis, person names and street addresses.
//
// Each recogniser is a cheap candidate finder (a byte scan triggered by '@',
// a digit run, a letter pair and so on, never a regular expression over the
// whole input) followed by a validator (Luhn and IIN ranges for cards, SSA
// rules for SSNs, libphonenumber metadata for phones, mod-97 for IBANs,
// net/netip for IP addresses) and a context-word adjustment of the score.
// The package is pure: strings in, spans out, no I/O. A Scanner is safe for
// concurrent use.
package pii

import (
	"slices"

	"github.com/declaw/declaw/internal/guard/secrets"
)

// Type names a kind of personal data.
type Type string

// The recognised types. PersonName and Address are best effort and are not
// in DefaultTypes.
const (
	Email      Type = "email"
	Phone      Type = "phone"
	SSN        Type = "ssn"
	CreditCard Type = "credit_card"
	APIKey     Type = "api_key"
	IPAddress  Type = "ip_address"
	IBAN       Type = "iban"
	PersonName Type = "person_name"
	Address    Type = "address"
)

// DefaultTypes are scanned when Scan is given no types.
var DefaultTypes = []Type{Email, Phone, SSN, CreditCard, APIKey, IPAddress, IBAN}

// AllTypes lists every type, best-effort ones last.
var AllTypes = []Type{Email, Phone, SSN, CreditCard, APIKey, IPAddress, IBAN, PersonName, Address}

// ParseType maps a name (as in Type, or a presidio-style alias such as
// EMAIL_ADDRESS or US_SSN) to a Type.
func ParseType(s string) (Type, bool) {
	switch s {
	case "email", "EMAIL", "EMAIL_ADDRESS":
		return Email, true
	case "phone", "PHONE", "PHONE_NUMBER":
		return Phone, true
	case "ssn", "SSN", "US_SSN":
		return SSN, true
	case "credit_card", "CREDIT_CARD", "card":
		return CreditCard, true
	case "api_key", "API_KEY", "secret":
		return APIKey, true
	case "ip_address", "IP_ADDRESS", "ip":
		return IPAddress, true
	case "iban", "IBAN", "IBAN_CODE":
		return IBAN, true
	case "person_name", "PERSON", "person", "name":
		return PersonName, true
	case "address", "STREET_ADDRESS", "ADDRESS":
		return Address, true
	}
	return "", false
}

// Span is one finding: Text is text[Start:End] (byte offsets) and Score is
// the confidence in [0,1].
type Span struct {
	Type  Type    `json:"type"`
	Start int     `json:"start"`
	End   int     `json:"end"`
	Score float64 `json:"score"`
	Text  string  `json:"text"`
	// Rule names the secrets rule for APIKey spans.
	Rule string `json:"rule,omitempty"`
}

// DefaultMinScore is the score below which spans are dropped when
// Scanner.MinScore is zero.
const DefaultMinScore = 0.5

// Scanner holds scan settings. The zero value is ready to use.
type Scanner struct {
	// MinScore drops spans scoring below it; zero means DefaultMinScore.
	MinScore float64
	// PhoneRegions are the CLDR regions tried for numbers without a
	// leading '+'; nil means DefaultPhoneRegions.
	PhoneRegions []string
}

type typeSet uint16

func (m typeSet) has(t Type) bool { return m&typeBit(t) != 0 }

func typeBit(t Type) typeSet {
	switch t {
	case Email:
		return 1 << 0
	case Phone:
		return 1 << 1
	case SSN:
		return 1 << 2
	case CreditCard:
		return 1 << 3
	case APIKey:
		return 1 << 4
	case IPAddress:
		return 1 << 5
	case IBAN:
		return 1 << 6
	case PersonName:
		return 1 << 7
	case Address:
		return 1 << 8
	}
	return 0
}

func maskOf(types []Type) typeSet {
	if len(types) == 0 {
		types = DefaultTypes
	}
	var m typeSet
	for _, t := range types {
		m |= typeBit(t)
	}
	return m
}

// Scan returns the spans of the given types (DefaultTypes when types is
// empty) in text, ordered by Start and not overlapping.
func (s *Scanner) Scan(text string, types []Type) []Span {
	m := maskOf(types)
	min := s.MinScore
	if min == 0 {
		min = DefaultMinScore
	}
	st := scanState{text: text, mask: m, regions: s.PhoneRegions}
	if st.regions == nil {
		st.regions = DefaultPhoneRegions
	}
	if m.has(Email) {
		st.scanEmails()
	}
	if m&(typeBit(Phone)|typeBit(SSN)|typeBit(CreditCard)|typeBit(IPAddress)|typeBit(IBAN)|typeBit(APIKey)) != 0 {
		st.scanWords()
	}
	if m.has(APIKey) {
		for _, f := range secrets.ScanAssignments(text) {
			st.addSecret(f)
		}
	}
	if m.has(PersonName) {
		st.scanNames()
	}
	if m.has(Address) {
		st.scanAddresses()
	}
	out := st.spans[:0]
	for _, sp := range st.spans {
		if sp.Score >= min {
			out = append(out, sp)
		}
	}
	out = resolveOverlaps(out)
	for i := range out {
		out[i].Text = text[out[i].Start:out[i].End]
	}
	return out
}

type scanState struct {
	text    string
	mask    typeSet
	regions []string
	spans   []Span
}

func (st *scanState) add(sp Span) {
	if sp.Score > 1 {
		sp.Score = 1
	}
	if sp.Score <= 0 || sp.Start >= sp.End {
		return
	}
	st.spans = append(st.spans, sp)
}

func (st *scanState) addSecret(f secrets.Finding) {
	st.add(Span{Type: APIKey, Start: f.Start, End: f.End, Score: f.Score, Rule: f.Rule})
}

// resolveOverlaps keeps, among overlapping spans, the higher score and then
// the longer span.
func resolveOverlaps(spans []Span) []Span {
	if len(spans) < 2 {
		return spans
	}
	slices.SortStableFunc(spans, func(a, b Span) int {
		if a.Start != b.Start {
			return a.Start - b.Start
		}
		return b.End - a.End
	})
	out := spans[:1]
	for _, sp := range spans[1:] {
		last := &out[len(out)-1]
		if sp.Start >= last.End {
			out = append(out, sp)
			continue
		}
		better := sp.Score > last.Score || (sp.Score == last.Score && sp.End-sp.Start > last.End-last.Start)
		if better {
			*last = sp
		}
	}
	return out
}
