package envd

import (
	"errors"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/envdapi"
	"github.com/declaw/declaw/internal/testenv"
)

func TestRunRefusesWithoutToken(t *testing.T) {
	t.Setenv(envdapi.AccessTokenEnv, "")
	err := Run([]string{"--addr", "127.0.0.1:0"})
	if !errors.Is(err, errNoToken) {
		t.Errorf("Run without a token = %v, want errNoToken", err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestRunServesAndStops(t *testing.T) {
	addr := freeAddr(t)
	t.Setenv(envdapi.AccessTokenEnv, "run-token")
	errc := make(chan error, 1)
	go func() { errc <- Run([]string{"--addr", addr}) }()

	get := func(token string) (int, error) {
		req, _ := http.NewRequest("GET", "http://"+addr+"/commands", nil)
		req.Header.Set(envdapi.AccessTokenHeader, token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	testenv.WaitFor(t, 10*time.Second, func() error {
		_, err := get("run-token")
		return err
	})
	if v, ok := os.LookupEnv(envdapi.AccessTokenEnv); ok {
		t.Errorf("%s still set to %q after start", envdapi.AccessTokenEnv, v)
	}
	if code, err := get("run-token"); err != nil || code != http.StatusOK {
		t.Errorf("GET /commands with the token = %d, %v, want 200", code, err)
	}
	if code, _ := get("other"); code != http.StatusUnauthorized {
		t.Errorf("GET /commands with a wrong token = %d, want 401", code)
	}

	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run after SIGTERM = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after SIGTERM")
	}
}
