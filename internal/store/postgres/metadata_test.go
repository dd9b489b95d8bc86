package postgres

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzMetadataPatterns checks the argument behind metadataPatterns without
// a database: in the JSON that json.Marshal writes for a map, one of the
// patterns of (k, v) occurs exactly when the map holds k with value v,
// whatever the keys and values spell out.
func FuzzMetadataPatterns(f *testing.F) {
	f.Add("team", "x", "n", "1", "team", "x")
	f.Add("x", `a","team":"x`, "y", `{"team":"x"}`, "team", "x")
	f.Add(`q"k`, "v", "k", `\",\"q\\\"k\":\"v`, `q"k`, "v")
	f.Add("a", "", "b", ",", "a", "")
	f.Add("nul", "a\x00b", "<>&", "\u2028", "<>&", "\u2028")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, qk, qv string) {
		for _, s := range []string{k1, v1, k2, v2, qk, qv} {
			if !utf8.ValidString(s) {
				return // the store's contract: valid UTF-8 (json.Marshal would alter it)
			}
		}
		m := map[string]string{k1: v1, k2: v2}
		enc, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got := false
		for _, p := range metadataPatterns(qk, qv) {
			got = got || strings.Contains(string(enc), p)
		}
		v, ok := m[qk]
		if want := ok && v == qv; got != want {
			t.Errorf("metadata %s, filter %q=%q: patterns match %v, want %v", enc, qk, qv, got, want)
		}
	})
}
