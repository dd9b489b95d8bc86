package tenancy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/declaw/declaw/internal/store"
)

// KeyStore is the part of store.Store that Keys uses.
type KeyStore interface {
	LookupAPIKey(ctx context.Context, hash string) (*store.APIKey, error)
	RevokeAPIKey(ctx context.Context, id string) (bool, error)
}

// ErrUnauthorized is returned by Authenticate for an unknown or revoked key.
var ErrUnauthorized = errors.New("invalid API key")

// ErrRevoked is the cause of the context of a request whose key was revoked
// while it ran (context.Cause).
var ErrRevoked = errors.New("API key revoked")

// DefaultRecheck is how long a key's validity is taken from the cache
// before the store is asked again (KeysConfig.Recheck).
const DefaultRecheck = 5 * time.Second

// KeysConfig configures Keys.
type KeysConfig struct {
	Store KeyStore
	// Recheck bounds how long a key revoked behind this server's back
	// (by another server on a shared database, or in the store directly)
	// keeps working here, for new requests and open streams alike
	// (default DefaultRecheck). Revocations through Revoke act at once.
	Recheck time.Duration
	Logf    func(format string, args ...any)
}

// Keys authenticates API keys with a short-lived cache and revokes them.
// It is safe for concurrent use.
//
// Each valid key seen has an entry holding a context that is cancelled when
// the key is found revoked; Hold ties a request's context to it. While a key
// has requests open, its entry re-asks the store every Recheck, so a key
// revoked elsewhere also cuts the streams open here.
type Keys struct {
	cfg KeysConfig

	mu     sync.Mutex
	byHash map[string]*keyEntry // guarded by mu
}

type keyEntry struct {
	caller *Caller
	ctx    context.Context // done once the key is revoked
	cancel context.CancelCauseFunc
	// guarded by Keys.mu:
	checked time.Time   // when the store last called the key valid
	users   int         // open requests (Hold)
	timer   *time.Timer // rechecks while users > 0
}

// NewKeys returns an authenticator over cfg.Store.
func NewKeys(cfg KeysConfig) *Keys {
	if cfg.Recheck <= 0 {
		cfg.Recheck = DefaultRecheck
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	return &Keys{cfg: cfg, byHash: map[string]*keyEntry{}}
}

// Authenticate returns the caller of key, or ErrUnauthorized when the key
// is unknown or revoked.
func (k *Keys) Authenticate(ctx context.Context, key string) (*Caller, error) {
	if key == "" {
		return nil, ErrUnauthorized
	}
	hash := HashKey(key)
	k.mu.Lock()
	e := k.byHash[hash]
	if e != nil && time.Since(e.checked) < k.cfg.Recheck {
		k.mu.Unlock()
		return e.caller, nil
	}
	k.mu.Unlock()

	rec, err := k.cfg.Store.LookupAPIKey(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		if e != nil {
			k.drop(e)
		}
		return nil, ErrUnauthorized
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if e = k.byHash[hash]; e == nil {
		c := &Caller{KeyID: rec.ID, TeamID: Owner(rec.TeamID), Name: rec.Name, Admin: rec.Admin, hash: hash}
		e = &keyEntry{caller: c}
		e.ctx, e.cancel = context.WithCancelCause(context.Background())
		k.byHash[hash] = e
	}
	e.checked = time.Now()
	return e.caller, nil
}

// Hold returns a context derived from ctx that carries c and is cancelled
// (cause ErrRevoked) as soon as c's key is revoked; release must be called
// when the request ends. c must come from Authenticate.
func (k *Keys) Hold(ctx context.Context, c *Caller) (_ context.Context, release func()) {
	ctx, cancel := context.WithCancelCause(WithCaller(ctx, c))
	k.mu.Lock()
	e := k.byHash[c.hash]
	if e == nil || e.caller != c {
		// Revoked between Authenticate and Hold.
		k.mu.Unlock()
		cancel(ErrRevoked)
		return ctx, func() {}
	}
	e.users++
	if e.timer == nil {
		e.timer = time.AfterFunc(k.cfg.Recheck, func() { k.recheck(e) })
	}
	k.mu.Unlock()
	stop := context.AfterFunc(e.ctx, func() { cancel(ErrRevoked) })
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			stop()
			cancel(context.Canceled)
			k.mu.Lock()
			e.users--
			k.mu.Unlock()
		})
	}
}

// recheck asks the store whether e's key is still valid while it has
// requests open, and cuts them if it is not.
func (k *Keys) recheck(e *keyEntry) {
	k.mu.Lock()
	if e.users == 0 || e.ctx.Err() != nil {
		e.timer = nil // nothing open: the next Hold starts a new one
		k.mu.Unlock()
		return
	}
	k.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := k.cfg.Store.LookupAPIKey(ctx, e.caller.hash)
	switch {
	case errors.Is(err, store.ErrNotFound):
		k.cfg.Logf("tenancy: API key %s was revoked elsewhere: cutting its open requests", e.caller.KeyID)
		k.drop(e)
	case err != nil:
		// The store is unreachable: keep what is open, try again later.
		k.cfg.Logf("tenancy: recheck API key %s: %v", e.caller.KeyID, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err == nil {
		e.checked = time.Now()
	}
	if e.users > 0 && e.ctx.Err() == nil {
		e.timer.Reset(k.cfg.Recheck)
		return
	}
	e.timer = nil
}

// drop forgets e and cancels every request held with its key.
func (k *Keys) drop(e *keyEntry) {
	k.mu.Lock()
	if k.byHash[e.caller.hash] == e {
		delete(k.byHash, e.caller.hash)
	}
	k.mu.Unlock()
	e.cancel(ErrRevoked)
}

// Revoke revokes the key with public id keyID in the store and, at once,
// refuses it and cancels every request open with it. It reports whether a
// valid key was revoked (false: unknown or already revoked).
func (k *Keys) Revoke(ctx context.Context, keyID string) (bool, error) {
	ok, err := k.cfg.Store.RevokeAPIKey(ctx, keyID)
	if err != nil {
		return false, err
	}
	k.Forget(keyID)
	return ok, nil
}

// Forget drops what is cached of the key keyID and cancels the requests
// open with it, as if it had been revoked; the next request with it asks
// the store again.
func (k *Keys) Forget(keyID string) {
	var gone []*keyEntry
	k.mu.Lock()
	for _, e := range k.byHash {
		if e.caller.KeyID == keyID {
			gone = append(gone, e)
		}
	}
	k.mu.Unlock()
	for _, e := range gone {
		k.drop(e)
	}
}
