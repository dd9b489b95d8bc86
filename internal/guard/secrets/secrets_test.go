package secrets

import (
	"strings"
	"testing"
)

// mixed returns a deterministic high-entropy alphanumeric string of n bytes.
func mixed(n int) string {
	const a = "Q7wE2rT9yU4iO1pA8sD3fG6hJ0kLzXcVbNm5"
	var b strings.Builder
	x := uint32(12345)
	for i := 0; i < n; i++ {
		x = x*1103515245 + 12345
		b.WriteByte(a[(x>>16)%uint32(len(a))])
	}
	return b.String()
}

func TestScanRules(t *testing.T) {
	tests := []struct {
		in, rule, secret string
	}{
		{"key=sk-proj-" + mixed(64) + "\n", "openai-api-key", "sk-proj-" + mixed(64)},
		{"sk-" + mixed(20) + "T3BlbkFJ" + mixed(20), "openai-api-key", "sk-" + mixed(20) + "T3BlbkFJ" + mixed(20)},
		{"ANTHROPIC sk-ant-api03-" + mixed(93) + "AA done", "anthropic-api-key", "sk-ant-api03-" + mixed(93) + "AA"},
		{"aws AKIAZ2XQ7F4LMNBVCXR5", "aws-access-key-id", "AKIAZ2XQ7F4LMNBVCXR5"},
		{"token ghp_" + mixed(36), "github-token", "ghp_" + mixed(36)},
		{"github_pat_" + mixed(82), "github-fine-grained-pat", "github_pat_" + mixed(82)},
		{"slack xoxb-1234567890-1234567890123-" + mixed(24), "slack-token", "xoxb-1234567890-1234567890123-" + mixed(24)},
		{"https://hooks.slack.com/services/T0000/B0000/" + mixed(40), "slack-webhook", "hooks.slack.com/services/T0000/B0000/" + mixed(40)},
		{"stripe sk_live_" + mixed(24), "stripe-key", "sk_live_" + mixed(24)},
		{"AIza" + mixed(35), "google-api-key", "AIza" + mixed(35)},
		{"jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"},
		{"-----BEGIN RSA PRIVATE KEY-----\n" + mixed(64) + "\n-----END RSA PRIVATE KEY-----", "private-key", "-----BEGIN RSA PRIVATE KEY-----\n" + mixed(64) + "\n-----END RSA PRIVATE KEY-----"},
		{"Authorization: Bearer " + mixed(40), "bearer-token", mixed(40)},
		{"DB_SECRET_KEY=" + mixed(32), "generic-api-key", mixed(32)},
		{`{"api_key": "` + mixed(30) + `"}`, "generic-api-key", mixed(30)},
		{"password: hunter2!x", "password-assignment", "hunter2!x"},
		{`aws_secret_access_key = "` + mixed(40) + `"`, "generic-api-key", mixed(40)},
	}
	for _, tt := range tests {
		got := Scan(tt.in)
		if len(got) != 1 {
			t.Errorf("Scan(%q) = %+v, want one %s finding", tt.in, got, tt.rule)
			continue
		}
		if got[0].Rule != tt.rule || tt.in[got[0].Start:got[0].End] != tt.secret {
			t.Errorf("Scan(%q) = %s %q, want %s %q", tt.in, got[0].Rule, tt.in[got[0].Start:got[0].End], tt.rule, tt.secret)
		}
	}
}

func TestScanNegatives(t *testing.T) {
	for _, in := range []string{
		"the task-based risk-aware desk-bound plan",
		"sk-proj-" + strings.Repeat("a", 64),    // below the entropy floor
		"AKIAIOSFODNN7EXAMPLE",                  // AWS documentation key
		"api_key=${OPENAI_API_KEY}",             // placeholder
		"API_KEY=<your-api-key-here>",           // placeholder
		"token: process.env.GITHUB_TOKEN",       // reference, not a value
		`"max_tokens": 1024`,                    // short numeric value
		"password = changeme123",                // placeholder
		"secret: xxxxxxxxxxxxxxxx",              // placeholder
		"key == value12345678",                  // comparison, not assignment
		"see https://example.com/token:abc",     // URL
		"Bearer token",                          // scheme word only
		"eyJhbGciOiJIUzI1NiJ9 is only a header", // one JWT segment
		"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
	} {
		if got := Scan(in); len(got) != 0 {
			t.Errorf("Scan(%q) = %+v, want none", in, got)
		}
	}
}

func TestEntropy(t *testing.T) {
	if got := Entropy("aaaa"); got != 0 {
		t.Errorf("Entropy(aaaa) = %v, want 0", got)
	}
	if got := Entropy("abcd"); got != 2 {
		t.Errorf("Entropy(abcd) = %v, want 2", got)
	}
}

func FuzzScan(f *testing.F) {
	f.Add("key=sk-proj-" + mixed(64))
	f.Add("-----BEGIN PRIVATE KEY-----\n" + mixed(80) + "\n-----END PRIVATE KEY-----")
	f.Add(`{"password":"hunter2!x","token":"` + mixed(20) + `"}`)
	f.Fuzz(func(t *testing.T, s string) {
		got := Scan(s)
		for i, fd := range got {
			if fd.Start < 0 || fd.End > len(s) || fd.Start >= fd.End {
				t.Fatalf("finding %+v out of range for len %d", fd, len(s))
			}
			if i > 0 && fd.Start < got[i-1].End {
				t.Fatalf("findings overlap: %+v %+v", got[i-1], fd)
			}
		}
	})
}
