package pii

import (
	"strings"
	"testing"
)

type want struct {
	typ  Type
	text string
}

func scanAll(s string) []Span { return (&Scanner{}).Scan(s, AllTypes) }

func check(t *testing.T, in string, got []Span, wants []want) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("Scan(%q) = %v, want %v", in, got, wants)
	}
	for i, w := range wants {
		if got[i].Type != w.typ || got[i].Text != w.text {
			t.Errorf("Scan(%q)[%d] = %s %q, want %s %q", in, i, got[i].Type, got[i].Text, w.typ, w.text)
		}
		if got[i].Text != in[got[i].Start:got[i].End] {
			t.Errorf("Scan(%q)[%d]: Text %q != text[Start:End] %q", in, i, got[i].Text, in[got[i].Start:got[i].End])
		}
	}
}

func TestScanFinds(t *testing.T) {
	tests := []struct {
		in    string
		wants []want
	}{
		{"mail me at jane.doe+x@mail.example.co.uk please", []want{{Email, "jane.doe+x@mail.example.co.uk"}}},
		{"E-mail:\nSzaszJanka@cuvox.de\n", []want{{Email, "SzaszJanka@cuvox.de"}}},
		{"My SSN: 536-22-1234.", []want{{SSN, "536-22-1234"}}},
		{"social security number 536221234", []want{{SSN, "536221234"}}},
		{"card 4012888888881881 exp 12/27", []want{{CreditCard, "4012888888881881"}}},
		{"Visa: 4111 1111 1111 1111", []want{{CreditCard, "4111 1111 1111 1111"}}},
		{"card (4111 1111 1111 1111) and (SSN 536-22-1234)", []want{{CreditCard, "4111 1111 1111 1111"}, {SSN, "536-22-1234"}}},
		{"amex 3782-822463-10005", []want{{CreditCard, "3782-822463-10005"}}},
		{"client ip 203.0.113.9 was blocked", []want{{IPAddress, "203.0.113.9"}}},
		{"|106.31.73.20|", []want{{IPAddress, "106.31.73.20"}}},
		{"route via fe80::1ff:fe23:4567:890a now", []want{{IPAddress, "fe80::1ff:fe23:4567:890a"}}},
		{"address 6e40:4041:c617:e898:c11:40d2:c669:2eb4 blocked", []want{{IPAddress, "6e40:4041:c617:e898:c11:40d2:c669:2eb4"}}},
		{"IBAN GB82 WEST 1234 5698 7654 32.", []want{{IBAN, "GB82 WEST 1234 5698 7654 32"}}},
		{"my iban is gb42nawi04454264788619", []want{{IBAN, "gb42nawi04454264788619"}}},
		{"call +41 44 668 18 00 today", []want{{Phone, "+41 44 668 18 00"}}},
		{"Phone: (415) 692-2025", []want{{Phone, "(415) 692-2025"}}},
		{"tel 020 7946 0958", []want{{Phone, "020 7946 0958"}}},
		{"key AKIAZ2XQ7F4LMNBVCXR5 leaked", []want{{APIKey, "AKIAZ2XQ7F4LMNBVCXR5"}}},
		{"Dear Mr. John Smith, thanks", []want{{PersonName, "John Smith"}}},
		{"ship to 1600 Pennsylvania Avenue today", []want{{Address, "1600 Pennsylvania Avenue"}}},
	}
	for _, tt := range tests {
		check(t, tt.in, scanAll(tt.in), tt.wants)
	}
}

// Near misses: shapes that resemble PII but fail validation or context.
func TestScanNearMisses(t *testing.T) {
	for _, in := range []string{
		// Cards failing Luhn, or outside any issuer range.
		"card 4111 1111 1111 1112",
		"card 4012-8888-8888-1882",
		"card 9999888877776666",
		"number 1234567812345678",
		// SSNs in invalid ranges.
		"SSN 000-12-3456", "SSN 666-12-3456", "SSN 900-12-3456", "SSN 123-00-4567", "SSN 123-45-0000",
		"ssn 111-11-1111",
		// Nine bare digits without context are not an SSN.
		"count 536221234 rows",
		// UUIDs and hashes.
		"id 123e4567-e89b-12d3-a456-426614174000",
		"trace 550e8400-e29b-41d4-a716-446655440000 done",
		"request 7f3c2a10-9b1e-4c55-8e2d-406614174000",
		"sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		// Version strings.
		"version 1.2.3.4", "v1.2.3.4", "upgrade to 4.19.2.1 now", "Chrome/120.0.6099.109 Safari",
		"go1.26.8", "release 10.4.2.1", "1.2.3.4.5",
		// Dates and times.
		"on 2024-01-31", "on 31.01.2024", "on 01/31/2024", "at 2024-01-31T10:20:30Z", "12:30:45",
		// Order, invoice and tracking numbers that are no card (Luhn
		// failure; a length Mastercard does not use).
		"Order number 4000000000000128",
		"invoice #" + luhnComplete("55000000000001"),
		// Cards with a valid Luhn digit and prefix but a grouping no
		// issuer prints (4-4-4-4 is, 3-5-4-4 is not).
		"card 411 11111 1111 1111",
		// SSN-shaped numbers with an invalid area, group or serial.
		"SSN 000-12-3456", "SSN 666-12-3456", "SSN 912-12-3456", "SSN 536-00-1234", "SSN 536-22-0000",
		"tracking 1Z999AA10123456784",
		// Emails that are not addresses.
		"image@2x.png", "user@localhost", "@mention in chat", "a@b",
		// IPv6-looking but not: MAC address and times.
		"mac 00:1a:2b:3c:4d:5e", "10:30:00", "call a::b or ab::cd here",
		// IBAN with a wrong check digit.
		"IBAN GB82 WEST 1234 5698 7654 33",
		// Short numbers without a phone word.
		"room 467 3395", "we sold 1234567 units",
		// Secrets placeholders.
		"api_key=${API_KEY}", "AKIAIOSFODNN7EXAMPLE",
	} {
		if got := scanAll(in); len(got) != 0 {
			t.Errorf("Scan(%q) = %+v, want no spans", in, got)
		}
	}
}

// The near-miss tests above must be able to fail: the same values are
// found once the disqualifying context is gone.
func TestContextDecides(t *testing.T) {
	card := luhnComplete("400000000000012")
	check(t, "card "+card, scanAll("card "+card), []want{{CreditCard, card}})
	check(t, "host 1.2.3.4", scanAll("host 1.2.3.4"), []want{{IPAddress, "1.2.3.4"}})
	check(t, "Phone:\n467 3395", scanAll("Phone:\n467 3395"), []want{{Phone, "467 3395"}})
}

func TestTypesFilter(t *testing.T) {
	in := "jane@example.com 536-22-1234 4012888888881881"
	got := (&Scanner{}).Scan(in, []Type{SSN})
	check(t, in, got, []want{{SSN, "536-22-1234"}})
	// A card is never re-labelled as a phone when only phones are wanted.
	if got := (&Scanner{}).Scan("card 4012888888881881", []Type{Phone}); len(got) != 0 {
		t.Errorf("Scan(card, phone) = %v, want none", got)
	}
}

func TestValidators(t *testing.T) {
	if !luhn("79927398713") || luhn("79927398710") {
		t.Error("luhn: wrong result on the standard example")
	}
	if !mod97([]byte("GB82WEST12345698765432")) || mod97([]byte("GB82WEST12345698765433")) {
		t.Error("mod97: wrong result on the standard example")
	}
	for _, s := range []string{"536221234", "001010001", "665999999"} {
		if !validSSN(s) {
			t.Errorf("validSSN(%s) = false, want true", s)
		}
	}
	for _, s := range []string{"000123456", "666123456", "900123456", "123004567", "123450000"} {
		if validSSN(s) {
			t.Errorf("validSSN(%s) = true, want false", s)
		}
	}
}

func TestParseType(t *testing.T) {
	for in, want := range map[string]Type{"EMAIL_ADDRESS": Email, "US_SSN": SSN, "IBAN_CODE": IBAN, "ip_address": IPAddress} {
		if got, ok := ParseType(in); !ok || got != want {
			t.Errorf("ParseType(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	if _, ok := ParseType("bogus"); ok {
		t.Error("ParseType(bogus) ok")
	}
}

func TestSpansOrderedAndDisjoint(t *testing.T) {
	in := strings.Repeat("x jane@example.com, 536-22-1234; 203.0.113.9 +41 44 668 18 00 ", 20)
	got := scanAll(in)
	if len(got) != 80 {
		t.Fatalf("got %d spans, want 80", len(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i].Start < got[i-1].End {
			t.Fatalf("spans %v and %v overlap", got[i-1], got[i])
		}
	}
}

func luhnComplete(d string) string {
	for c := byte('0'); c <= '9'; c++ {
		if luhn(d + string(c)) {
			return d + string(c)
		}
	}
	panic("unreachable")
}

// Checksum- and structure-validated types are found whatever the words
// around them: a card after "order id", an SSN after "card", an IBAN after
// "reference". Context may raise a score, never suppress a valid value.
func TestValidatedTypesIgnoreContext(t *testing.T) {
	for in, want := range map[string]Type{
		"Order number 4000000000000127":         CreditCard,
		"order id 4111 1111 1111 1111":          CreditCard,
		"invoice 378282246310005":               CreditCard,
		"tracking 4012888888881881":             CreditCard,
		"ticket 3782 822463 10005":              CreditCard,
		"card 536-22-1234":                      SSN,
		"ref 536-22-1234 attached":              SSN,
		"order 536 22 1234":                     SSN,
		"reference GB82 WEST 1234 5698 7654 32": IBAN,
		`{"order_id": "5555-5555-5555-4444"}`:   CreditCard,
	} {
		got := scanAll(in)
		if len(got) != 1 || got[0].Type != want {
			t.Errorf("Scan(%q) = %+v, want one %s", in, got, want)
		}
	}
}
