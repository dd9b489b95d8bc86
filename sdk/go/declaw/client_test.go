package declaw

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

func TestBaseURL(t *testing.T) {
	tests := []struct {
		apiURL, domain string
		want           string
		wantErr        bool
	}{
		{"", "", "http://127.0.0.1:8080", false},
		{"", "127.0.0.1:8080", "http://127.0.0.1:8080", false},
		{"", "api.example.com", "https://api.example.com", false},
		{"", "api.example.com:443", "https://api.example.com:443", false},
		{"", "api.example.com:80", "http://api.example.com:80", false},
		{"", "[::1]:9000", "http://[::1]:9000", false},
		{"https://x.example/prefix/", "ignored:1", "https://x.example/prefix", false},
		{"http://h:1?q=1#f", "", "http://h:1", false},
		{"", "http://h:1", "", true},
		{"ftp://h", "", "", true},
		{"/relative", "", "", true},
	}
	for _, tt := range tests {
		u, err := BaseURL(tt.apiURL, tt.domain)
		if (err != nil) != tt.wantErr {
			t.Errorf("BaseURL(%q, %q) error = %v, want error %v", tt.apiURL, tt.domain, err, tt.wantErr)
			continue
		}
		if err == nil && u.String() != tt.want {
			t.Errorf("BaseURL(%q, %q) = %s, want %s", tt.apiURL, tt.domain, u, tt.want)
		}
	}
}

func TestQuery(t *testing.T) {
	got := query("path", "/tmp/a b+c&d=é", "empty", "", "metadata", "k=v&k2=v 2")
	want := "path=/tmp/a%20b%2Bc%26d%3D%C3%A9&metadata=k%3Dv%26k2%3Dv%202"
	if got != want {
		t.Errorf("query = %s, want %s", got, want)
	}
}

func TestSSEReader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Event
	}{
		{"LF", "event: a\ndata: 1\n\nevent: b\ndata: 2\n\n", []Event{{Name: "a", Data: "1"}, {Name: "b", Data: "2"}}},
		{"CRLF", "event: a\r\ndata: 1\r\n\r\n", []Event{{Name: "a", Data: "1"}}},
		{"CR", "event: a\rdata: 1\r\rdata: 2\r\r", []Event{{Name: "a", Data: "1"}, {Data: "2"}}},
		{"multi-line data, no space, id", "id: 7\ndata:x\ndata: y\n\n", []Event{{Data: "x\ny", ID: "7"}}},
		{"comments and blank runs", ": hi\n\n\n: there\nevent: e\n\n", []Event{{Name: "e"}}},
		{"unterminated last event", "data: {\"a\":1}", []Event{{Data: `{"a":1}`}}},
		{"unknown fields and bare field names", "retry: 5\nfoo\ndata\n\n", []Event{{Data: ""}}},
		{"value keeps further colons", "data: a: b\n\n", []Event{{Data: "a: b"}}},
	}
	for _, tt := range tests {
		for _, r := range []struct {
			name string
			rd   io.Reader
		}{{"whole", strings.NewReader(tt.in)}, {"byte by byte", iotest.OneByteReader(strings.NewReader(tt.in))}} {
			t.Run(tt.name+"/"+r.name, func(t *testing.T) {
				sr := NewSSEReader(r.rd)
				var got []Event
				for {
					ev, err := sr.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatalf("Next: %v", err)
					}
					got = append(got, ev)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("events = %+v, want %+v", got, tt.want)
				}
				for i := range got {
					if got[i] != tt.want[i] {
						t.Errorf("event %d = %+v, want %+v", i, got[i], tt.want[i])
					}
				}
			})
		}
	}
}

func TestCreateWaitsForInProgressIdempotentCreate(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		n := len(keys)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if n == 1 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(409)
			io.WriteString(w, `{"message":"in progress","code":"idempotency_in_progress"}`)
			return
		}
		w.WriteHeader(201)
		io.WriteString(w, `{"sandbox_id":"sbx-1","envd_access_token":"t"}`)
	}))
	defer srv.Close()
	c, err := New(Config{APIURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := c.CreateSandbox(context.Background(), CreateRequest{Template: "base"})
	if err != nil {
		t.Fatalf("CreateSandbox: %v", err)
	}
	if sb.SandboxID != "sbx-1" || !strings.Contains(string(sb.Raw), "envd_access_token") {
		t.Errorf("CreateSandbox = %+v (raw %s)", sb, sb.Raw)
	}
	if len(keys) != 2 || keys[0] == "" || keys[0] != keys[1] {
		t.Errorf("Idempotency-Keys = %q, want the same key twice", keys)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		status      int
		body        string
		wantMessage string
		wantCode    string
	}{
		{404, `{"message":"sandbox x: sandbox not found","code":"sandbox_not_found"}`, "sandbox x: sandbox not found", "sandbox_not_found"},
		{401, `{"code":"unauthorized"}`, "unauthorized", "unauthorized"},
		{404, "404 page not found\n", "404 page not found", ""},
		{502, "", "502 Bad Gateway", ""},
	}
	for _, tt := range tests {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tt.status)
			io.WriteString(w, tt.body)
		}))
		c, _ := New(Config{APIURL: srv.URL})
		_, err := c.GetSandbox(context.Background(), "x")
		srv.Close()
		var e *Error
		if !errors.As(err, &e) || e.Status != tt.status || e.Message != tt.wantMessage || e.Code != tt.wantCode {
			t.Errorf("status %d body %q: err = %#v, want message %q code %q", tt.status, tt.body, err, tt.wantMessage, tt.wantCode)
		}
		if tt.status == 404 && !IsNotFound(err) {
			t.Errorf("IsNotFound(%v) = false", err)
		}
	}
}
