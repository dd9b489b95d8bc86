// Package porttoken signs and checks the short-lived access tokens that let
// a browser (which cannot send an API key header) reach one port of one
// sandbox through the API's port proxy.
//
// A token is "v1.<expiry unix seconds>.<base64url HMAC-SHA256>": the MAC
// covers the sandbox id, the port, the expiry and a per-boot secret of the
// sandbox (its envd token), under a server secret. A token therefore opens
// exactly one port of one sandbox until it expires, and dies with the
// sandbox: a killed sandbox answers no port, and a sandbox restored under
// the same id boots with a new secret, so older tokens no longer verify.
package porttoken

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MaxTTL bounds a token's lifetime.
const MaxTTL = 24 * time.Hour

// DefaultTTL is a token's lifetime when the caller names none.
const DefaultTTL = time.Hour

var (
	// ErrInvalid is returned for a token that is malformed or whose MAC
	// does not match (another sandbox, port, boot or server secret).
	ErrInvalid = errors.New("invalid port access token")
	// ErrExpired is returned for a well-formed token past its expiry.
	ErrExpired = errors.New("port access token expired")
)

// Signer signs and verifies tokens under one server secret.
type Signer struct {
	secret []byte
}

// New returns a Signer keyed by secret; an empty secret draws a random one
// (tokens then last as long as the server process, as sandboxes do).
func New(secret []byte) (*Signer, error) {
	if len(secret) == 0 {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("porttoken: draw secret: %w", err)
		}
	}
	return &Signer{secret: append([]byte(nil), secret...)}, nil
}

// Sign returns a token for port of sandbox id (boot = the sandbox's per-boot
// secret) valid until exp.
func (s *Signer) Sign(id string, port int, boot string, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	return "v1." + e + "." + base64.RawURLEncoding.EncodeToString(s.mac(id, port, boot, e))
}

// Verify checks tok for port of sandbox id at now and returns its expiry.
func (s *Signer) Verify(tok, id string, port int, boot string, now time.Time) (time.Time, error) {
	v, rest, ok := strings.Cut(tok, ".")
	if !ok || v != "v1" {
		return time.Time{}, ErrInvalid
	}
	e, sig, ok := strings.Cut(rest, ".")
	if !ok {
		return time.Time{}, ErrInvalid
	}
	unix, err := strconv.ParseInt(e, 10, 64)
	if err != nil || unix <= 0 || strconv.FormatInt(unix, 10) != e {
		return time.Time{}, ErrInvalid
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(id, port, boot, e)) {
		return time.Time{}, ErrInvalid
	}
	exp := time.Unix(unix, 0)
	if !now.Before(exp) {
		return exp, ErrExpired
	}
	return exp, nil
}

func (s *Signer) mac(id string, port int, boot, exp string) []byte {
	h := hmac.New(sha256.New, s.secret)
	// NUL separators: none of the fields can hold a NUL (ids and the boot
	// secret are URL-safe, port and expiry decimal).
	fmt.Fprintf(h, "declaw-port-v1\x00%s\x00%d\x00%s\x00%s", id, port, boot, exp)
	return h.Sum(nil)
}
