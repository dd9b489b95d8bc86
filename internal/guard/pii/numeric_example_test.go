package pii

import "testing"

// The SSA's advertising numbers are what users try first: they are flagged.
func TestWellKnownExampleSSNs(t *testing.T) {
	var s Scanner
	for _, text := range []string{"My SSN is 123-45-6789.", "ssn: 078-05-1120"} {
		spans := s.Scan(text, []Type{SSN})
		if len(spans) != 1 {
			t.Errorf("Scan(%q) = %+v, want one ssn span", text, spans)
		}
	}
}
