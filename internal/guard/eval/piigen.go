package eval

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"strings"

	"github.com/declaw/declaw/internal/guard/pii"
)

// A NearMiss is a text holding a value shaped like a validated PII type
// that is not one (a Luhn failure, an SSN with area 000, an IBAN with a
// wrong check), often beside words that suggest it is.
type NearMiss struct {
	Text   string   `json:"text"`
	Mimics pii.Type `json:"mimics"`
	// Start and End delimit the value in Text (byte offsets).
	Start, End int
}

// GeneratedPII builds a labelled set from this package's own generator
// (seeded, deterministic): n texts per type (credit_card, ssn, iban,
// phone) with valid values in every printed form, many in misleading
// contexts ("order id" before a card, "card" before an SSN, inside JSON
// strings), and n near misses per validated type. Positive spans use
// code-point offsets like presidio's files.
//
// The generator was written from the formats' specifications, knowing the
// scanner: it checks the scanner against the rules the issue states
// (validated values are found whatever the context; invalid ones never
// are), it is not an estimate on unseen text.
func GeneratedPII(seed uint64, n int) ([]PresidioRecord, []NearMiss) {
	g := &gen{rng: rand.New(rand.NewPCG(seed, 0x5eed))}
	var recs []PresidioRecord
	var near []NearMiss
	for i := 0; i < n; i++ {
		recs = append(recs, g.place(g.card(), "CREDIT_CARD", cardContexts))
		recs = append(recs, g.place(g.ssn(), "US_SSN", ssnContexts))
		recs = append(recs, g.place(g.iban(), "IBAN_CODE", ibanContexts))
		recs = append(recs, g.place(g.phone(), "PHONE_NUMBER", phoneContexts))
		near = append(near, g.near(g.badCard(), pii.CreditCard, nearCardContexts))
		near = append(near, g.near(g.badSSN(), pii.SSN, nearSSNContexts))
		near = append(near, g.near(g.badIBAN(), pii.IBAN, nearIBANContexts))
	}
	return recs, near
}

// Contexts: {v} is the value. Misleading ones name another kind of number.
var (
	neutral = []string{
		"{v}",
		"Here it is: {v}.",
		"The value {v} was in the second paragraph of the message.",
		`{"note": "{v}"}`,
		"- {v}\n- something else",
	}
	cardContexts  = append([]string{"order id {v}", "Invoice {v} is attached.", "tracking number {v}", "ref: {v}", `{"order_id": "{v}"}`, "Pay with card {v} please.", "ticket #{v}"}, neutral...)
	ssnContexts   = append([]string{"card {v}", "order {v}", "my card number is {v}", "Invoice {v}", `{"id": "{v}"}`, "SSN {v}", "social security number: {v}"}, neutral...)
	ibanContexts  = append([]string{"reference {v}", "order id {v}", "Please wire it to {v}.", `{"account": "{v}"}`, "IBAN: {v}"}, neutral...)
	phoneContexts = append([]string{"call me at {v}", "Phone: {v}", "reach the desk on {v} tomorrow", `{"phone": "{v}"}`, "tel. {v}", "WhatsApp {v}"}, neutral...)

	nearCardContexts = []string{"card number {v}", "my Visa is {v}", "credit card: {v}", `{"card": "{v}"}`, "{v}", "Pay with card {v} please."}
	nearSSNContexts  = []string{"SSN {v}", "social security number {v}", `{"ssn": "{v}"}`, "{v}", "my SSN is {v}."}
	nearIBANContexts = []string{"IBAN {v}", "Please wire it to IBAN {v}.", `{"iban": "{v}"}`, "{v}"}
)

type gen struct{ rng *rand.Rand }

func (g *gen) pick(ss []string) string { return ss[g.rng.IntN(len(ss))] }

func (g *gen) digits(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('0' + g.rng.IntN(10))
	}
	return string(b)
}

// place puts v into a random context and labels it.
func (g *gen) place(v, entity string, ctx []string) PresidioRecord {
	c := g.pick(ctx)
	pre, post, _ := strings.Cut(c, "{v}")
	text := pre + v + post
	start := len([]rune(pre))
	return PresidioRecord{FullText: text, Spans: []PresidioSpan{{EntityType: entity, EntityValue: v, Start: start, End: start + len([]rune(v))}}}
}

func (g *gen) near(v string, t pii.Type, ctx []string) NearMiss {
	c := g.pick(ctx)
	pre, post, _ := strings.Cut(c, "{v}")
	return NearMiss{Text: pre + v + post, Mimics: t, Start: len(pre), End: len(pre) + len(v)}
}

func luhnDigit(d string) byte {
	sum := 0
	dbl := true
	for i := len(d) - 1; i >= 0; i-- {
		v := int(d[i] - '0')
		if dbl {
			if v *= 2; v > 9 {
				v -= 9
			}
		}
		sum += v
		dbl = !dbl
	}
	return byte('0' + (10-sum%10)%10)
}

// group splits s into groups of the given sizes joined by sep.
func group(s string, sep string, sizes ...int) string {
	var parts []string
	for _, n := range sizes {
		parts = append(parts, s[:n])
		s = s[n:]
	}
	return strings.Join(parts, sep)
}

type cardKind struct {
	prefix func(g *gen) string
	length int
	groups []int
}

var cardKinds = []cardKind{
	{func(*gen) string { return "4" }, 16, []int{4, 4, 4, 4}},                                    // Visa
	{func(g *gen) string { return fmt.Sprint(51 + g.rng.IntN(5)) }, 16, []int{4, 4, 4, 4}},       // Mastercard
	{func(g *gen) string { return fmt.Sprint(2221 + g.rng.IntN(500)) }, 16, []int{4, 4, 4, 4}},   // Mastercard 2-series
	{func(g *gen) string { return []string{"34", "37"}[g.rng.IntN(2)] }, 15, []int{4, 6, 5}},     // Amex
	{func(*gen) string { return "6011" }, 16, []int{4, 4, 4, 4}},                                 // Discover
	{func(*gen) string { return "36" }, 14, []int{4, 6, 4}},                                      // Diners
	{func(g *gen) string { return fmt.Sprint(3528 + g.rng.IntN(62)) }, 16, []int{4, 4, 4, 4}},    // JCB
	{func(*gen) string { return "4" }, 19, []int{4, 4, 4, 4, 3}},                                 // Visa 19
	{func(g *gen) string { return fmt.Sprint(622126 + g.rng.IntN(800)) }, 16, []int{4, 4, 4, 4}}, // Discover/UnionPay co-brand
}

func (g *gen) cardDigits() (string, cardKind) {
	k := cardKinds[g.rng.IntN(len(cardKinds))]
	p := k.prefix(g)
	d := p + g.digits(k.length-len(p)-1)
	return d + string(luhnDigit(d)), k
}

// card is a valid number, contiguous or in its issuer's grouping with
// spaces or dashes.
func (g *gen) card() string {
	d, k := g.cardDigits()
	switch g.rng.IntN(3) {
	case 0:
		return d
	case 1:
		return group(d, " ", k.groups...)
	}
	return group(d, "-", k.groups...)
}

// badCard is a near miss: a Luhn failure, a length the issuer does not
// use, or a grouping no card is printed in.
func (g *gen) badCard() string {
	d, k := g.cardDigits()
	switch g.rng.IntN(3) {
	case 0: // Luhn failure: change the check digit
		c := (int(d[len(d)-1]-'0') + 1 + g.rng.IntN(9)) % 10
		d = d[:len(d)-1] + string(byte('0'+c))
		return group(d, " ", k.groups...)
	case 1: // Amex prefix at 16 digits, Luhn-valid
		b := "37" + g.digits(13)
		return b + string(luhnDigit(b))
	}
	// 3-5-4-4: valid digits, impossible grouping
	if len(d) != 16 {
		b := "4" + g.digits(14)
		d = b + string(luhnDigit(b))
	}
	return group(d, " ", 3, 5, 4, 4)
}

func (g *gen) ssnParts() (area, grp, serial int) {
	for {
		area = 1 + g.rng.IntN(899)
		if area != 666 {
			break
		}
	}
	return area, 1 + g.rng.IntN(99), 1 + g.rng.IntN(9999)
}

func (g *gen) ssn() string {
	a, b, c := g.ssnParts()
	sep := []string{"-", "-", " "}[g.rng.IntN(3)]
	return fmt.Sprintf("%03d%s%02d%s%04d", a, sep, b, sep, c)
}

// badSSN has an area of 000, 666 or 9xx, a group of 00 or a serial of
// 0000.
func (g *gen) badSSN() string {
	a, b, c := g.ssnParts()
	switch g.rng.IntN(5) {
	case 0:
		a = 0
	case 1:
		a = 666
	case 2:
		a = 900 + g.rng.IntN(100)
	case 3:
		b = 0
	default:
		c = 0
	}
	return fmt.Sprintf("%03d-%02d-%04d", a, b, c)
}

// IBAN formats: country, then the BBAN as a pattern of 'n' (digit) and
// 'a' (capital letter).
var ibanFormats = []struct{ cc, bban string }{
	{"DE", "nnnnnnnnnnnnnnnnnn"},
	{"GB", "aaaannnnnnnnnnnnnn"},
	{"FR", "nnnnnnnnnnnnnnnnnnnnnnn"},
	{"ES", "nnnnnnnnnnnnnnnnnnnn"},
	{"NL", "aaaannnnnnnnnn"},
	{"IT", "annnnnnnnnnnnnnnnnnnnnn"},
	{"CH", "nnnnnnnnnnnnnnnnn"},
}

func ibanCheck(cc, bban string) string {
	s := bban + cc + "00"
	var num strings.Builder
	for _, r := range s {
		if r >= 'A' && r <= 'Z' {
			fmt.Fprint(&num, int(r-'A'+10))
		} else {
			num.WriteRune(r)
		}
	}
	n, _ := new(big.Int).SetString(num.String(), 10)
	m := new(big.Int).Mod(n, big.NewInt(97)).Int64()
	return fmt.Sprintf("%02d", 98-m)
}

func (g *gen) ibanRaw() string {
	f := ibanFormats[g.rng.IntN(len(ibanFormats))]
	b := make([]byte, len(f.bban))
	for i := range b {
		if f.bban[i] == 'a' {
			b[i] = byte('A' + g.rng.IntN(26))
		} else {
			b[i] = byte('0' + g.rng.IntN(10))
		}
	}
	return f.cc + ibanCheck(f.cc, string(b)) + string(b)
}

// printIBAN writes an IBAN contiguous or in groups of four.
func (g *gen) printIBAN(s string) string {
	if g.rng.IntN(2) == 0 {
		return s
	}
	var parts []string
	for len(s) > 4 {
		parts = append(parts, s[:4])
		s = s[4:]
	}
	return strings.Join(append(parts, s), " ")
}

func (g *gen) iban() string { return g.printIBAN(g.ibanRaw()) }

// badIBAN has wrong check digits.
func (g *gen) badIBAN() string {
	s := g.ibanRaw()
	c := (int(s[3]-'0') + 1 + g.rng.IntN(9)) % 10
	return g.printIBAN(s[:3] + string(byte('0'+c)) + s[4:])
}

// phone is a number in one of the common written forms.
func (g *gen) phone() string {
	area := []string{"212", "415", "646", "312", "617", "206", "303", "512"}[g.rng.IntN(8)]
	exch := fmt.Sprint(201 + g.rng.IntN(798))
	sub := g.digits(4)
	switch g.rng.IntN(10) {
	case 0:
		return "+1" + area + exch + sub // E.164
	case 1:
		return "+1 " + area + " " + exch + " " + sub
	case 2:
		return "(" + area + ") " + exch + "-" + sub
	case 3:
		return area + "." + exch + "." + sub
	case 4:
		return area + "-" + exch + "-" + sub
	case 5:
		return "+1-" + area + "-" + exch + "-" + sub
	case 6:
		return "+44 20 7946 0" + g.digits(3) // London
	case 7:
		return "+49 30 " + fmt.Sprint(2+g.rng.IntN(7)) + g.digits(7) // Berlin
	case 8:
		return "+33 1 " + group(fmt.Sprint(40+g.rng.IntN(59))+g.digits(6), " ", 2, 2, 2, 2) // Paris
	}
	return "+61 2 " + group(fmt.Sprint(8+g.rng.IntN(2))+g.digits(7), " ", 4, 4) // Sydney
}

// GeneratedScore is the generator's report for one type.
type GeneratedScore struct {
	TypeScore
	// NearMisses is the number of near misses of the type, Flagged how
	// many had any span over the value, FPR their ratio.
	NearMisses int     `json:"near_misses"`
	Flagged    int     `json:"near_misses_flagged"`
	NearFPR    float64 `json:"near_miss_fpr"`
}

// ScoreGenerated scores the generator's positives (span level, as
// ScorePII) and near misses (any span of any type overlapping the value
// of the default types overlapping the value counts as a false positive)
// for the validated types and phones.
func ScoreGenerated(sc *pii.Scanner, recs []PresidioRecord, near []NearMiss) []GeneratedScore {
	types := []pii.Type{pii.CreditCard, pii.SSN, pii.IBAN, pii.Phone}
	ts, _ := ScorePII(sc, recs, types)
	out := make([]GeneratedScore, len(ts))
	for i, t := range ts {
		out[i].TypeScore = t
		for _, nm := range near {
			if nm.Mimics != t.Type {
				continue
			}
			out[i].NearMisses++
			for _, sp := range sc.Scan(nm.Text, pii.DefaultTypes) {
				if sp.Start < nm.End && sp.End > nm.Start {
					out[i].Flagged++
					break
				}
			}
		}
		if out[i].NearMisses > 0 {
			out[i].NearFPR = float64(out[i].Flagged) / float64(out[i].NearMisses)
		}
	}
	return out
}
