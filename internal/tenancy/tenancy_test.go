package tenancy

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/store"
	"github.com/declaw/declaw/internal/store/sqlite"
)

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "declaw.db"))
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// addKey stores a fresh key of team and returns it with its record.
func addKey(t *testing.T, st store.Store, team string, admin bool) (string, *store.APIKey) {
	t.Helper()
	key := NewKey()
	rec := &store.APIKey{ID: store.KeyID(HashKey(key)), Hash: HashKey(key), TeamID: team, Name: "k", Admin: admin}
	if err := st.CreateAPIKey(t.Context(), rec); err != nil {
		t.Fatalf("CreateAPIKey(%s): %v", team, err)
	}
	return key, rec
}

func TestVisible(t *testing.T) {
	acme := WithCaller(context.Background(), &Caller{TeamID: "acme"})
	def := WithCaller(context.Background(), &Caller{TeamID: store.DefaultTeam, Admin: true})
	tests := []struct {
		name  string
		ctx   context.Context
		owner string
		want  bool
	}{
		{"own team", acme, "acme", true},
		{"other team", acme, "globex", false},
		{"pre-teams record is the default team's", acme, "", false},
		{"default team sees pre-teams records", def, "", true},
		{"admin does not see other teams", def, "acme", false},
		{"no caller sees nothing", context.Background(), store.DefaultTeam, false},
		{"no caller sees nothing, empty owner", context.Background(), "", false},
	}
	for _, tt := range tests {
		if got := Visible(tt.ctx, tt.owner); got != tt.want {
			t.Errorf("%s: Visible(owner %q) = %v, want %v", tt.name, tt.owner, got, tt.want)
		}
	}
	if err := RequireAdmin(acme); !errors.Is(err, ErrForbidden) {
		t.Errorf("RequireAdmin(non-admin) = %v, want ErrForbidden", err)
	}
	if err := RequireAdmin(def); err != nil {
		t.Errorf("RequireAdmin(admin) = %v, want nil", err)
	}
}

func TestNewKey(t *testing.T) {
	a, b := NewKey(), NewKey()
	if a == b || !strings.HasPrefix(a, "dcl_") || len(a) != 44 {
		t.Errorf("NewKey() = %q, %q: want two different dcl_ + 40 hex keys", a, b)
	}
	if h := HashKey(a); len(h) != 64 || h == HashKey(b) {
		t.Errorf("HashKey(%q) = %q: want 64 hex characters, distinct per key", a, h)
	}
}

func TestAuthenticate(t *testing.T) {
	st := openStore(t)
	if err := st.CreateTeam(t.Context(), &store.Team{ID: "team_a", Name: "a"}); err != nil {
		t.Fatal(err)
	}
	key, rec := addKey(t, st, "team_a", false)
	k := NewKeys(KeysConfig{Store: st, Logf: t.Logf})
	c, err := k.Authenticate(t.Context(), key)
	if err != nil {
		t.Fatalf("Authenticate(valid key): %v", err)
	}
	if c.TeamID != "team_a" || c.KeyID != rec.ID || c.Admin {
		t.Errorf("Authenticate = %+v, want team_a, key %s, not admin", c, rec.ID)
	}
	for _, bad := range []string{"", "dcl_wrong", key + "x"} {
		if _, err := k.Authenticate(t.Context(), bad); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("Authenticate(%q) = %v, want ErrUnauthorized", bad, err)
		}
	}
	ok, err := k.Revoke(t.Context(), rec.ID)
	if err != nil || !ok {
		t.Fatalf("Revoke(%s) = %v, %v, want true", rec.ID, ok, err)
	}
	if _, err := k.Authenticate(t.Context(), key); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("Authenticate(revoked key) right after Revoke = %v, want ErrUnauthorized", err)
	}
	if ok, err := k.Revoke(t.Context(), rec.ID); err != nil || ok {
		t.Errorf("Revoke(%s) again = %v, %v, want false", rec.ID, ok, err)
	}
}

// TestRevokeCutsHeldRequests: a request held with a key is cancelled the
// moment the key is revoked, with ErrRevoked as the cause; requests of other
// keys go on.
func TestRevokeCutsHeldRequests(t *testing.T) {
	st := openStore(t)
	keyA, recA := addKey(t, st, store.DefaultTeam, false)
	keyB, _ := addKey(t, st, store.DefaultTeam, false)
	k := NewKeys(KeysConfig{Store: st, Logf: t.Logf, Recheck: time.Hour})
	ca, err := k.Authenticate(t.Context(), keyA)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := k.Authenticate(t.Context(), keyB)
	if err != nil {
		t.Fatal(err)
	}
	ctxA, releaseA := k.Hold(t.Context(), ca)
	defer releaseA()
	ctxB, releaseB := k.Hold(t.Context(), cb)
	defer releaseB()
	if CallerFrom(ctxA) != ca {
		t.Errorf("CallerFrom(held context) = %v, want the caller", CallerFrom(ctxA))
	}
	if _, err := k.Revoke(t.Context(), recA.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctxA.Done():
	case <-time.After(time.Second):
		t.Fatal("the request held with the revoked key was not cancelled")
	}
	if cause := context.Cause(ctxA); !errors.Is(cause, ErrRevoked) {
		t.Errorf("cause = %v, want ErrRevoked", cause)
	}
	if ctxB.Err() != nil {
		t.Errorf("the request of another key was cancelled too: %v", ctxB.Err())
	}
	// Holding the revoked caller again yields a dead context.
	ctx2, release2 := k.Hold(t.Context(), ca)
	defer release2()
	if ctx2.Err() == nil {
		t.Error("Hold with a caller whose key was revoked returned a live context")
	}
}

// TestRevokedElsewhere: a key revoked in the store behind the
// authenticator's back (another server on a shared database) stops working
// within Recheck, and its open requests are cut.
func TestRevokedElsewhere(t *testing.T) {
	st := openStore(t)
	key, rec := addKey(t, st, store.DefaultTeam, true)
	k := NewKeys(KeysConfig{Store: st, Logf: t.Logf, Recheck: 50 * time.Millisecond})
	c, err := k.Authenticate(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, release := k.Hold(t.Context(), c)
	defer release()
	if ok, err := st.RevokeAPIKey(t.Context(), rec.ID); err != nil || !ok {
		t.Fatalf("store RevokeAPIKey = %v, %v", ok, err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("an open request of a key revoked in the store was not cut by the recheck")
	}
	if !errors.Is(context.Cause(ctx), ErrRevoked) {
		t.Errorf("cause = %v, want ErrRevoked", context.Cause(ctx))
	}
	if _, err := k.Authenticate(t.Context(), key); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("Authenticate after the recheck = %v, want ErrUnauthorized", err)
	}
}

// TestReleaseStopsRecheck: once its requests end, a key's entry stops
// asking the store (no goroutine or timer is left per key).
func TestReleaseStopsRecheck(t *testing.T) {
	st := openStore(t)
	key, _ := addKey(t, st, store.DefaultTeam, false)
	cs := &countingStore{KeyStore: st}
	k := NewKeys(KeysConfig{Store: cs, Recheck: 20 * time.Millisecond})
	c, err := k.Authenticate(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	_, release := k.Hold(t.Context(), c)
	time.Sleep(100 * time.Millisecond)
	release()
	release() // idempotent
	time.Sleep(60 * time.Millisecond)
	n := cs.n.Load()
	if n < 2 {
		t.Errorf("%d lookups while a request was held for 5 recheck periods, want at least 2", n)
	}
	time.Sleep(100 * time.Millisecond)
	if m := cs.n.Load(); m != n {
		t.Errorf("lookups went on after the last release: %d -> %d", n, m)
	}
}

type countingStore struct {
	KeyStore
	n atomic.Int64
}

func (c *countingStore) LookupAPIKey(ctx context.Context, hash string) (*store.APIKey, error) {
	c.n.Add(1)
	return c.KeyStore.LookupAPIKey(ctx, hash)
}

// BenchmarkAuthenticateHold is the per-request cost of authentication on a
// cached key plus the revocable context, beside the SHA-256 of the key alone
// (the floor: the old cache did that much too).
func BenchmarkAuthenticateHold(b *testing.B) {
	st, err := sqlite.Open(filepath.Join(b.TempDir(), "declaw.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	key := NewKey()
	if err := st.CreateAPIKey(context.Background(), &store.APIKey{ID: store.KeyID(HashKey(key)), Hash: HashKey(key), TeamID: store.DefaultTeam}); err != nil {
		b.Fatal(err)
	}
	k := NewKeys(KeysConfig{Store: st, Recheck: time.Hour})
	b.Run("sha256-baseline", func(b *testing.B) {
		for b.Loop() {
			HashKey(key)
		}
	})
	b.Run("authenticate+hold", func(b *testing.B) {
		ctx := context.Background()
		for b.Loop() {
			c, err := k.Authenticate(ctx, key)
			if err != nil {
				b.Fatal(err)
			}
			_, release := k.Hold(ctx, c)
			release()
		}
	})
}
