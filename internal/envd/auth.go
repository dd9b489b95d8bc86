package envd

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"

	"github.com/declaw/declaw/internal/envdapi"
)

var errNoToken = errors.New("no access token: set " + envdapi.AccessTokenEnv + " (or use --insecure-no-token for tests)")

// requireToken answers 401 unless the request carries token in
// envdapi.AccessTokenHeader. The comparison is constant-time (hashes of
// equal length are compared). With insecure and no token, everything passes.
func requireToken(token string, insecure bool, next http.Handler) http.Handler {
	if token == "" && insecure {
		return next
	}
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := sha256.Sum256([]byte(r.Header.Get(envdapi.AccessTokenHeader)))
		if token == "" || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			writeJSON(w, http.StatusUnauthorized, envdapi.Error{Message: "missing or invalid access token", Code: "unauthorized"})
			return
		}
		next.ServeHTTP(w, r)
	})
}
