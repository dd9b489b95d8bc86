package cli

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/sdk/go/declaw"
)

func auditEvent(id int, typ, data string) string {
	return fmt.Sprintf(`{"id":%d,"sandbox_id":"sbx-1","timestamp":"2026-11-27T04:00:0%d.5Z","type":%q,"data":%s}`, id, id, typ, data)
}

func TestAudit(t *testing.T) {
	ev1 := auditEvent(1, "sandbox.created", `{"template": "python", "timeout": 300}`)
	ev2 := auditEvent(2, "command.run", `{"cmd":"ls"}`)
	ev3 := auditEvent(3, "sandbox.killed", `{"reason":"api"}`)
	tests := []struct {
		name       string
		args       []string
		handle     http.HandlerFunc
		wantReqs   []string
		wantStdout string
		wantStderr string
		wantCode   int
	}{
		{
			name:     "all pages",
			args:     []string{"audit", "sbx-1"},
			wantReqs: []string{`GET /sandboxes/sbx-1/audit`, `GET /sandboxes/sbx-1/audit?cursor=2`},
			handle: func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Query().Get("cursor") == "" {
					answer(200, `{"events":[`+ev1+`,`+ev2+`],"next_cursor":"2"}`)(w, r)
				} else {
					answer(200, `{"events":[`+ev3+`],"next_cursor":null}`)(w, r)
				}
			},
			wantStdout: "2026-11-27T04:00:01.500Z  sandbox.created       {\"template\":\"python\",\"timeout\":300}\n" +
				"2026-11-27T04:00:02.500Z  command.run           {\"cmd\":\"ls\"}\n" +
				"2026-11-27T04:00:03.500Z  sandbox.killed        {\"reason\":\"api\"}\n",
		},
		{
			name:       "filters, limit, json",
			args:       []string{"--json", "audit", "sbx-1", "--type", "sandbox,command.run", "--since", "2026-11-27T04:00:00Z", "--until", "1795752000", "--limit", "2"},
			handle:     answer(200, `{"events":[`+ev1+`,`+ev3+`],"next_cursor":"3"}`),
			wantReqs:   []string{`GET /sandboxes/sbx-1/audit?type=sandbox&type=command.run&since=2026-11-27T04%3A00%3A00Z&until=2026-11-27T04%3A00%3A00Z&limit=2`},
			wantStdout: `[` + strings.NewReplacer(`": `, `":`, `, "`, `,"`).Replace(ev1) + `,` + ev3 + `]` + "\n",
		},
		{
			name:       "no events",
			args:       []string{"audit", "sbx-1", "--json"},
			handle:     answer(200, `{"events":[],"next_cursor":null}`),
			wantReqs:   []string{`GET /sandboxes/sbx-1/audit`},
			wantStdout: "[]\n",
		},
		{
			name:       "unknown sandbox",
			args:       []string{"audit", "sbx-x"},
			handle:     answer(404, `{"message":"sandbox sbx-x: sandbox not found","code":"sandbox_not_found"}`),
			wantReqs:   []string{`GET /sandboxes/sbx-x/audit`},
			wantStderr: "declaw audit: sandbox sbx-x: sandbox not found (404 sandbox_not_found)\n",
			wantCode:   1,
		},
		{
			name:       "bad since",
			args:       []string{"audit", "sbx-1", "--since", "yesterday"},
			wantStderr: `--since: "yesterday" is not an RFC 3339 time, unix seconds or a duration`,
			wantCode:   2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t, tt.handle)
			stdout, stderr, code := runCLI(t, f, nil, nil, tt.args...)
			if code != tt.wantCode {
				t.Errorf("run(%q) = exit %d, want %d; stderr: %s", tt.args, code, tt.wantCode, stderr)
			}
			if stdout != tt.wantStdout {
				t.Errorf("run(%q) stdout:\n%s\nwant:\n%s", tt.args, stdout, tt.wantStdout)
			}
			if !strings.Contains(stderr, tt.wantStderr) || tt.wantStderr == "" && stderr != "" {
				t.Errorf("run(%q) stderr = %q, want %q", tt.args, stderr, tt.wantStderr)
			}
			if got := f.requestLines(); strings.Join(got, "\n") != strings.Join(tt.wantReqs, "\n") {
				t.Errorf("run(%q) requests:\n%s\nwant:\n%s", tt.args, strings.Join(got, "\n"), strings.Join(tt.wantReqs, "\n"))
			}
		})
	}
}

func TestAuditFollow(t *testing.T) {
	// The trail grows while we follow it: events 1 and 2 at first, 3 later.
	polls := 0
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		switch cursor := r.URL.Query().Get("cursor"); {
		case cursor == "":
			answer(200, `{"events":[`+auditEvent(1, "a", "{}")+`,`+auditEvent(2, "b", "null")+`],"next_cursor":null}`)(w, r)
		case cursor == "2" && polls < 2:
			polls++
			answer(200, `{"events":[],"next_cursor":null}`)(w, r)
		case cursor == "2":
			answer(200, `{"events":[`+auditEvent(3, "c", `{"x":1}`)+`],"next_cursor":null}`)(w, r)
		default:
			answer(200, `{"events":[],"next_cursor":null}`)(w, r)
		}
	})
	var stdout, stderr bytes.Buffer
	e := &env{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
	c := e.newClientCmd("declaw audit", nil)
	c.opts.json = true
	cl, err := declaw.New(declaw.Config{Domain: f.domain()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		done <- c.auditFollow(ctx, cl, "sbx-1", declaw.AuditQuery{Types: []string{"x"}}, 10*time.Millisecond)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		reqs := f.requests()
		if len(reqs) >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("auditFollow = %d; stderr %s", code, stderr.String())
	}
	want := auditEvent(1, "a", "{}") + "\n" + auditEvent(2, "b", "null") + "\n" + auditEvent(3, "c", `{"x":1}`) + "\n"
	if stdout.String() != want {
		t.Errorf("follow output:\n%s\nwant:\n%s", stdout.String(), want)
	}
	reqs := f.requestLines()
	wantFirst := []string{"GET /sandboxes/sbx-1/audit?type=x", "GET /sandboxes/sbx-1/audit?type=x&cursor=2",
		"GET /sandboxes/sbx-1/audit?type=x&cursor=2", "GET /sandboxes/sbx-1/audit?type=x&cursor=2", "GET /sandboxes/sbx-1/audit?type=x&cursor=3"}
	if len(reqs) < len(wantFirst) || strings.Join(reqs[:len(wantFirst)], "\n") != strings.Join(wantFirst, "\n") {
		t.Errorf("follow requests:\n%s\nwant them to start with:\n%s", strings.Join(reqs, "\n"), strings.Join(wantFirst, "\n"))
	}
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
	}{
		{"", time.Time{}},
		{"2026-11-27T04:00:00Z", time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC)},
		{"2026-11-27T06:00:00.25+02:00", time.Date(2026, 11, 27, 4, 0, 0, 25e7, time.UTC)},
		{"1795752000", time.Unix(1795752000, 0)},
		{"10m", now.Add(-10 * time.Minute)},
	}
	for _, tt := range tests {
		got, err := parseWhen(tt.in, now)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"yesterday", "-5m", "2026-11-27"} {
		if _, err := parseWhen(bad, now); err == nil {
			t.Errorf("parseWhen(%q) = nil error", bad)
		}
	}
}
