package porttoken

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	s, err := New([]byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	exp := now.Add(time.Minute)
	tok := s.Sign("sb1", 8080, "boot", exp)
	if got, err := s.Verify(tok, "sb1", 8080, "boot", now); err != nil || !got.Equal(exp) {
		t.Fatalf("Verify(own token) = %v, %v; want %v, nil", got, err, exp)
	}
	other, _ := New([]byte("other"))
	cases := []struct {
		name, tok, id, boot string
		port                int
		now                 time.Time
		signer              *Signer
		want                error
	}{
		{"other sandbox", tok, "sb2", "boot", 8080, now, s, ErrInvalid},
		{"other port", tok, "sb1", "boot", 8081, now, s, ErrInvalid},
		{"other boot", tok, "sb1", "boot2", 8080, now, s, ErrInvalid},
		{"other server secret", tok, "sb1", "boot", 8080, now, other, ErrInvalid},
		{"expired", tok, "sb1", "boot", 8080, exp, s, ErrExpired},
		{"expiry edited", strings.Replace(tok, ".1700000060.", ".1700009999.", 1), "sb1", "boot", 8080, now, s, ErrInvalid},
		{"empty", "", "sb1", "boot", 8080, now, s, ErrInvalid},
		{"garbage", "v1.x.y", "sb1", "boot", 8080, now, s, ErrInvalid},
		{"other version", "v2" + tok[2:], "sb1", "boot", 8080, now, s, ErrInvalid},
		{"leading zero expiry", strings.Replace(tok, ".1700000060.", ".01700000060.", 1), "sb1", "boot", 8080, now, s, ErrInvalid},
	}
	for _, c := range cases {
		if _, err := c.signer.Verify(c.tok, c.id, c.port, c.boot, c.now); !errors.Is(err, c.want) {
			t.Errorf("%s: Verify = %v, want %v", c.name, err, c.want)
		}
	}
}

func TestRandomSecret(t *testing.T) {
	a, _ := New(nil)
	b, _ := New(nil)
	exp := time.Now().Add(time.Minute)
	if _, err := b.Verify(a.Sign("sb", 1, "x", exp), "sb", 1, "x", time.Now()); !errors.Is(err, ErrInvalid) {
		t.Errorf("a token of one random-secret signer verified under another: %v", err)
	}
}
