package redact_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/declaw/declaw/internal/guard/guardtest"
	"github.com/declaw/declaw/internal/guard/pii"
	"github.com/declaw/declaw/internal/guard/redact"
)

var scanner = &pii.Scanner{}

func detect(s string) []redact.Span {
	var out []redact.Span
	for _, sp := range scanner.Scan(s, nil) {
		out = append(out, redact.Span{Type: string(sp.Type), Start: sp.Start, End: sp.End})
	}
	return out
}

func TestTextTokens(t *testing.T) {
	r := redact.New()
	in := "mail a@example.com, then b@example.com, again a@example.com; SSN 536-22-1234"
	got := r.Text(in, detect(in))
	want := "mail [REDACTED_EMAIL_1], then [REDACTED_EMAIL_2], again [REDACTED_EMAIL_1]; SSN [REDACTED_SSN_3]"
	if got != want {
		t.Fatalf("Text = %q, want %q", got, want)
	}
	// The counter is per Redactor (per request) and spans calls.
	if got := r.Text("b@example.com x@example.com", detect("b@example.com x@example.com")); got != "[REDACTED_EMAIL_2] [REDACTED_EMAIL_4]" {
		t.Errorf("second Text = %q", got)
	}
	m := r.Map()
	if m["[REDACTED_SSN_3]"] != "536-22-1234" || len(m) != 4 {
		t.Errorf("Map = %v", m)
	}
	if back := redact.Rehydrate(want, m); back != in {
		t.Errorf("Rehydrate = %q, want %q", back, in)
	}
}

func TestTokenAvoidsExistingText(t *testing.T) {
	r := redact.New()
	in := "[REDACTED_EMAIL_1] is literal; a@example.com is not"
	got := r.Text(in, detect(in))
	if !strings.Contains(got, "[REDACTED_EMAIL_2]") {
		t.Fatalf("Text = %q, want the new token to skip [REDACTED_EMAIL_1]", got)
	}
	if back := redact.Rehydrate(got, r.Map()); back != in {
		t.Errorf("Rehydrate = %q, want %q", back, in)
	}
}

func TestRehydrateUnknownToken(t *testing.T) {
	m := map[string]string{"[REDACTED_EMAIL_1]": "a@example.com"}
	in := "[REDACTED_EMAIL_9] and [REDACTED_EMAIL_1] and [REDACTED_"
	want := "[REDACTED_EMAIL_9] and a@example.com and [REDACTED_"
	if got := redact.Rehydrate(in, m); got != want {
		t.Errorf("Rehydrate = %q, want %q", got, want)
	}
}

func TestJSON(t *testing.T) {
	in := []byte(`{"model":"x","messages":[{"role":"user","content":"I am a@example.com\nSSN 536-22-1234 \u00e9"},{"role":"a@example.com","content":"ok"}],"a@example.com":1,"n":[1,2,{"k":"card 4012888888881881"}]}`)
	r := redact.New()
	out, err := r.JSON(in, detect)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(out) {
		t.Fatalf("output is not valid JSON: %s", out)
	}
	var got map[string]any
	json.Unmarshal(out, &got)
	msgs := got["messages"].([]any)
	if c := msgs[0].(map[string]any)["content"]; c != "I am [REDACTED_EMAIL_1]\nSSN [REDACTED_SSN_2] é" {
		t.Errorf("content = %q", c)
	}
	if c := msgs[1].(map[string]any)["role"]; c != "[REDACTED_EMAIL_1]" {
		t.Errorf("role value = %q (values are redacted, same value same token)", c)
	}
	if _, ok := got["a@example.com"]; !ok {
		t.Errorf("object key was rewritten: %s", out)
	}
	// Rehydrating the body gives back the original document.
	var orig, back any
	json.Unmarshal(in, &orig)
	json.Unmarshal([]byte(redact.Rehydrate(string(out), r.Map())), &back)
	if !reflect.DeepEqual(orig, back) {
		t.Errorf("rehydrated body differs:\n got %v\nwant %v", back, orig)
	}
	if _, err := redact.New().JSON([]byte(`{"a":`), detect); err == nil {
		t.Error("JSON on invalid input: no error")
	}
}

func TestRehydratorStreaming(t *testing.T) {
	r := redact.New()
	src := "Write to a@example.com and b@example.com, SSN 536-22-1234. [REDACTED_ nope [x]"
	red := r.Text(src, detect(src))
	m := r.Map()
	// Split the redacted text at every pair of positions: output must
	// always equal the one-shot rehydration.
	want := redact.Rehydrate(red, m)
	if want != src {
		t.Fatalf("one-shot Rehydrate = %q, want %q", want, src)
	}
	for i := 0; i <= len(red); i++ {
		for j := i; j <= len(red); j += 7 {
			h := redact.NewRehydrator(m)
			got := h.Write(red[:i]) + h.Write(red[i:j]) + h.Write(red[j:]) + h.Flush()
			if got != want {
				t.Fatalf("split %d,%d: got %q, want %q", i, j, got, want)
			}
		}
	}
	// A partial token is held back, not emitted.
	h := redact.NewRehydrator(m)
	if got := h.Write("hello [REDACTED_EMA"); got != "hello " {
		t.Errorf("Write with partial token = %q, want %q", got, "hello ")
	}
	if got := h.Write("IL_1] bye"); got != "a@example.com bye" {
		t.Errorf("Write completing token = %q", got)
	}
}

func BenchmarkRedactJSON1MiB(b *testing.B) {
	body := guardtest.ChatRequest(1 << 20)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	cpu := guardtest.CPUThroughput()
	for b.Loop() {
		if _, err := redact.New().JSON(body, detect); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(cpu(int64(len(body)), b.N), "MB/cpu-s")
}

func FuzzRedactJSON(f *testing.F) {
	f.Add([]byte(`{"content":"mail a@example.com SSN 536-22-1234"}`))
	f.Add([]byte(`["\u005bREDACTED_EMAIL_1]", "a@example.com", {"k\"":"4012888888881881"}]`))
	f.Add([]byte(`{"a":"\ud83d\ude00 +41 44 668 18 00","b":[true,null,1.5e3]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := redact.New()
		out, err := r.JSON(in, detect)
		if !json.Valid(in) {
			if err == nil {
				t.Fatalf("invalid input accepted: %q", in)
			}
			return
		}
		if err != nil {
			t.Fatalf("valid input rejected: %v", err)
		}
		if !json.Valid(out) {
			t.Fatalf("output not valid JSON:\n in %q\nout %q", in, out)
		}
		var a, b any
		if json.Unmarshal(in, &a) != nil {
			return
		}
		if err := json.Unmarshal([]byte(redact.Rehydrate(string(out), r.Map())), &b); err != nil {
			t.Fatalf("rehydrated output not JSON: %v", err)
		}
		if !reflect.DeepEqual(normalize(a), normalize(b)) {
			t.Fatalf("round trip differs:\n in %q\nout %q", in, out)
		}
	})
}

// normalize maps invalid UTF-8 the way encoding/json decoding does, so
// comparisons see the same strings.
func normalize(v any) any {
	switch x := v.(type) {
	case string:
		return strings.ToValidUTF8(x, "\uFFFD")
	case []any:
		for i := range x {
			x[i] = normalize(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = normalize(x[k])
		}
	}
	return v
}

func FuzzRedactRehydrate(f *testing.F) {
	f.Add("mail a@example.com SSN 536-22-1234 [REDACTED_EMAIL_1]", 5)
	f.Add("card 4012888888881881 / 4012888888881881", 3)
	f.Fuzz(func(t *testing.T, s string, cut int) {
		r := redact.New()
		red := r.Text(s, detect(s))
		if back := redact.Rehydrate(red, r.Map()); back != s {
			t.Fatalf("Rehydrate(Text(%q)) = %q", s, back)
		}
		if cut < 0 {
			cut = -cut
		}
		if len(red) > 0 {
			cut %= len(red) + 1
		} else {
			cut = 0
		}
		h := redact.NewRehydrator(r.Map())
		if got := h.Write(red[:cut]) + h.Write(red[cut:]) + h.Flush(); got != s {
			t.Fatalf("streaming rehydrate of %q split at %d = %q", red, cut, got)
		}
	})
}

// The JSON string decoder agrees with encoding/json; the detect callback
// sees the decoded value.
func TestUnquoteMatchesEncodingJSON(t *testing.T) {
	for _, lit := range []string{`"a\nb\t\"\\\/\b\f\r"`, `"\u00e9\ud83d\ude00"`, `"\ud800x"`, `"\udc00\ud800"`, `"x\u0041y"`} {
		var want string
		if err := json.Unmarshal([]byte(lit), &want); err != nil {
			t.Fatal(err)
		}
		r := redact.New()
		var got string
		out, err := r.JSON([]byte("["+lit+"]"), func(s string) []redact.Span {
			got = s
			return nil
		})
		if err != nil || string(out) != "["+lit+"]" {
			t.Fatalf("JSON(%s) = %s, %v", lit, out, err)
		}
		if got != want {
			t.Errorf("decoded %s = %q, want %q", lit, got, want)
		}
	}
}

// walkJSON accepts exactly what encoding/json.Valid accepts.
func FuzzWalkJSON(f *testing.F) {
	for _, s := range []string{`{}`, `[]`, `{"a":[1,-0.5e+3,true,false,null,"x\u00e9\n"]}`, `[1,]`, `{"a" 1}`, `"\ud800"`, ` 0 `, `01`, `1.`, `-`, `[[[[`, "\"\x01\"", `{"a":1}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		_, err := redact.New().JSON(in, func(string) []redact.Span { return nil })
		if (err == nil) != json.Valid(in) {
			t.Fatalf("JSON(%q) error %v, json.Valid %v", in, err, json.Valid(in))
		}
	})
}
