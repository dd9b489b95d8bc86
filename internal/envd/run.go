package envd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/declaw/declaw/internal/envd/process"
	"github.com/declaw/declaw/internal/envdapi"
)

// Run is envd's main: it parses args, reads the access token from the
// environment (and removes it), then serves until SIGTERM or SIGINT, when
// it kills every process tree it started.
func Run(args []string) error {
	fset := flag.NewFlagSet("envd", flag.ContinueOnError)
	addr := fset.String("addr", net.JoinHostPort("0.0.0.0", strconv.Itoa(envdapi.Port)), "listen address")
	insecure := fset.Bool("insecure-no-token", false, "serve without an access token (tests only)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	token := os.Getenv(envdapi.AccessTokenEnv)
	os.Unsetenv(envdapi.AccessTokenEnv)

	logger := log.New(os.Stderr, "envd: ", log.LstdFlags|log.Lmsgprefix)
	srv, err := New(Config{AccessToken: token, Insecure: *insecure, Logf: logger.Printf})
	if err != nil {
		return err
	}
	defer srv.Close()
	if os.Getpid() != 1 {
		// Reap orphans of our commands like PID 1 would.
		if err := process.SetSubreaper(); err != nil {
			logger.Printf("cannot become child subreaper: %v", err)
		}
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          logger,
		// No ReadTimeout/WriteTimeout: uploads, waits and SSE streams are long.
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	logger.Printf("serving on %s", ln.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Printf("shutting down")
	srv.Close() // ends foreground and streaming requests
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
