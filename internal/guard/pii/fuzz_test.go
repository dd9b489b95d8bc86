package pii

import (
	"testing"
	"unicode/utf8"
)

func FuzzScan(f *testing.F) {
	for _, s := range []string{
		"mail jane@example.com, SSN 536-22-1234, card 4111 1111 1111 1111",
		"+41 (0)96 471 07 95 x123 and (37) 788-063",
		"fe80::1 1.2.3.4 GB82 WEST 1234 5698 7654 32",
		"Dear Mr. John Smith at 1600 Pennsylvania Avenue",
		"\xff\xfe@\x00 ::: ..@.. 000-00-0000",
	} {
		f.Add(s)
	}
	s := &Scanner{}
	f.Fuzz(func(t *testing.T, in string) {
		got := s.Scan(in, AllTypes)
		for i, sp := range got {
			if sp.Start < 0 || sp.End > len(in) || sp.Start >= sp.End {
				t.Fatalf("span %+v out of range (len %d)", sp, len(in))
			}
			if sp.Text != in[sp.Start:sp.End] {
				t.Fatalf("span text %q != input slice %q", sp.Text, in[sp.Start:sp.End])
			}
			if sp.Score < 0 || sp.Score > 1 {
				t.Fatalf("score %v out of [0,1]", sp.Score)
			}
			if i > 0 && sp.Start < got[i-1].End {
				t.Fatalf("spans overlap: %+v %+v", got[i-1], sp)
			}
			if utf8.ValidString(in) && !utf8.ValidString(sp.Text) {
				t.Fatalf("span %q splits a UTF-8 sequence", sp.Text)
			}
		}
	})
}
