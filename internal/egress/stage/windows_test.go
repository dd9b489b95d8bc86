package stage

import (
	"strings"
	"testing"

	"github.com/declaw/declaw/internal/guard/pii"
)

func TestScanWindows(t *testing.T) {
	sc := &pii.Scanner{}
	// Emails placed across every window boundary position class.
	var sb strings.Builder
	var want []string
	for i := 0; sb.Len() < 5*ScanWindow; i++ {
		sb.WriteString(strings.Repeat("lorem ipsum ", 37+i%11))
		e := "user" + strings.Repeat("x", i%7) + "@example.org"
		want = append(want, e)
		sb.WriteString(e + " ")
	}
	text := sb.String()
	got := ScanWindows(sc, text, []pii.Type{pii.Email})
	if len(got) != len(want) {
		t.Fatalf("found %d emails, want %d", len(got), len(want))
	}
	for i, sp := range got {
		if text[sp.Start:sp.End] != want[i] {
			t.Errorf("span %d = %q, want %q", i, text[sp.Start:sp.End], want[i])
		}
	}
	whole := sc.Scan(text, []pii.Type{pii.Email})
	if len(whole) != len(got) {
		t.Errorf("windowed %d spans, whole-text %d", len(got), len(whole))
	}
}
