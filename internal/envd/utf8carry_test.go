package envd

import (
	"strings"
	"testing"
)

func TestUTF8Carry(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   []string
	}{
		{"ascii", []string{"ab", "cd"}, []string{"ab", "cd", ""}},
		{"split 2-byte", []string{"h\xc3", "\xa9llo"}, []string{"h", "éllo", ""}},
		{"split 4-byte thrice", []string{"\xf0", "\x9f", "\x98", "\x80!"}, []string{"", "", "", "😀!", ""}},
		{"incomplete at end", []string{"ok\xe2\x82"}, []string{"ok", "\xe2\x82"}},
		{"invalid passes", []string{"a\xffb"}, []string{"a\xffb", ""}},
		{"lone continuation", []string{"\x80\x80\x80\x80"}, []string{"\x80\x80\x80\x80", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c utf8Carry
			var got []string
			for _, ch := range tt.chunks {
				got = append(got, c.split([]byte(ch)))
			}
			got = append(got, c.flush())
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("chunks %q -> %q, want %q", tt.chunks, got, tt.want)
			}
		})
	}
}

func FuzzUTF8Carry(f *testing.F) {
	f.Add([]byte("héllo wörld 😀"), 3)
	f.Fuzz(func(t *testing.T, data []byte, step int) {
		step = max(1, step%17)
		var c utf8Carry
		var out strings.Builder
		for i := 0; i < len(data); i += step {
			out.WriteString(c.split(data[i:min(len(data), i+step)]))
		}
		out.WriteString(c.flush())
		if out.String() != string(data) {
			t.Errorf("reassembled %q, want %q", out.String(), data)
		}
	})
}
