// Package tenancy answers two questions every API handler asks: who is
// calling (the team and rights of an API key) and whether that caller may
// see a resource (only its own team's: a key never sees or touches another
// team's sandboxes, snapshots, audit, templates, volumes or secrets).
//
// Authentication goes through Keys, which also makes revocation take effect
// at once: every request made with a key runs under a context that is
// cancelled when the key is revoked, so open streams (SSE, PTY, follows)
// are cut, not only new requests refused.
package tenancy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"

	"github.com/declaw/declaw/internal/store"
)

// Caller is the authenticated identity of a request: one API key.
type Caller struct {
	KeyID  string // public id of the key (store.KeyID)
	TeamID string // the team whose resources the key reaches
	Name   string // the key's name
	Admin  bool   // may manage teams and keys (of every team)
	hash   string
}

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c *Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller ctx carries, or nil.
func CallerFrom(ctx context.Context) *Caller {
	c, _ := ctx.Value(callerKey{}).(*Caller)
	return c
}

// TeamOf returns the team of ctx's caller, or "" when there is none.
func TeamOf(ctx context.Context) string {
	if c := CallerFrom(ctx); c != nil {
		return c.TeamID
	}
	return ""
}

// Owner normalises a stored owner: "" (records from before teams) is
// store.DefaultTeam.
func Owner(team string) string {
	if team == "" {
		return store.DefaultTeam
	}
	return team
}

// Visible reports whether ctx's caller may see a resource owned by team.
// Without a caller nothing is visible: a handler that forgot
// authentication fails closed. Admin keys are no exception: they manage
// teams and keys, and see the resources of their own team only.
func Visible(ctx context.Context, team string) bool {
	c := CallerFrom(ctx)
	return c != nil && c.TeamID != "" && Owner(team) == Owner(c.TeamID)
}

// ErrForbidden is returned by RequireAdmin for a non-admin caller.
var ErrForbidden = errors.New("this call needs an admin API key")

// RequireAdmin returns ErrForbidden unless ctx's caller is an admin key.
func RequireAdmin(ctx context.Context) error {
	if c := CallerFrom(ctx); c == nil || !c.Admin {
		return ErrForbidden
	}
	return nil
}

// HashKey returns the stored form of an API key (SHA-256, hex).
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// NewKey returns a fresh random API key ("dcl_" and 160 random bits in hex).
func NewKey() string {
	b := make([]byte, 20)
	rand.Read(b)
	return "dcl_" + hex.EncodeToString(b)
}
