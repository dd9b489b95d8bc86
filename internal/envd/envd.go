// Package envd is the agent that runs as PID 1 inside every sandbox. It
// serves the per-sandbox API (see package envdapi) on port 49983: commands,
// PTYs and stdio sessions (package process), files (package filesystem),
// directory watches (package watch) and the sandbox-wide environment set
// by POST /init.
//
// Everything reachable here is also reachable by the sandbox's own code on
// localhost, so all input is treated as hostile: bodies are bounded,
// errors are JSON, nothing panics. The access token only keeps out other
// parties; code in the sandbox is root anyway.
package envd

import (
	"log"
	"maps"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/declaw/declaw/internal/envd/filesystem"
	"github.com/declaw/declaw/internal/envd/process"
	"github.com/declaw/declaw/internal/envd/sysuser"
	"github.com/declaw/declaw/internal/envd/watch"
	"github.com/declaw/declaw/internal/envdapi"
)

// Config configures a Server. The zero value is valid but only with
// Insecure set (it has no token).
type Config struct {
	// AccessToken is required in the envdapi.AccessTokenHeader of every
	// request but GET /health.
	AccessToken string
	// Insecure allows an empty AccessToken: no request is authenticated.
	// For tests only.
	Insecure bool
	// Process tunes the process manager.
	Process process.Config
	// Watch tunes directory watches (POST /files/watch).
	Watch watch.Config
	// Users is the user database (default /etc/passwd, /etc/group).
	Users sysuser.DB
	// SetHostname sets the hostname on POST /init. Default syscall.Sethostname.
	SetHostname func(name string) error
	// FSRoot is the root of the filesystem the CA paths of envdapi and
	// snapshots are relative to ("/" in a sandbox; tests use a temporary
	// directory).
	FSRoot string
	// Logf logs; default log.Printf to stderr.
	Logf func(format string, args ...any)
}

// Server serves the envd API. Create it with New; it is an http.Handler.
type Server struct {
	cfg     Config
	procs   *process.Manager
	watches *watch.Manager
	files   filesystem.FS
	handler http.Handler
	started time.Time // by the sandbox's own clock: what GET /snapshot takes by default

	mu   sync.Mutex
	envs map[string]string // +checklocks:mu, sandbox-wide, set by /init
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.AccessToken == "" && !cfg.Insecure {
		return nil, errNoToken
	}
	if cfg.FSRoot == "" {
		cfg.FSRoot = "/"
	}
	if cfg.SetHostname == nil {
		cfg.SetHostname = func(name string) error { return syscall.Sethostname([]byte(name)) }
	}
	if cfg.Logf == nil {
		cfg.Logf = log.New(os.Stderr, "envd: ", log.LstdFlags|log.Lmsgprefix).Printf
	}
	s := &Server{
		started: time.Now(),
		cfg:     cfg,
		procs:   process.NewManager(cfg.Process),
		watches: watch.NewManager(cfg.Watch),
		files:   filesystem.FS{Users: cfg.Users},
	}
	s.handler = s.routes()
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handler.ServeHTTP(w, r)
}

// Close kills every process tree the server started and stops its
// directory watches.
func (s *Server) Close() {
	s.procs.KillAll()
	s.watches.Close()
}

func (s *Server) routes() http.Handler {
	api := http.NewServeMux()
	api.HandleFunc("POST /init", s.handleInit)
	api.HandleFunc("POST /warmup", s.handleWarmup)
	api.HandleFunc("GET /snapshot", s.handleSnapshotGet)
	api.HandleFunc("PUT /snapshot", s.handleSnapshotPut)

	api.HandleFunc("POST /commands", s.handleRun)
	api.HandleFunc("GET /commands", s.handleList)
	api.HandleFunc("POST /commands/stream", s.handleRunStream)
	api.HandleFunc("DELETE /commands/{pid}", s.handleKill)
	api.HandleFunc("POST /commands/{pid}/stdin", s.handleStdin)
	api.HandleFunc("GET /commands/{pid}/wait", s.handleWait)
	api.HandleFunc("GET /commands/{pid}/stream", s.handleCommandStream)

	api.HandleFunc("POST /stdio", s.handleStartStdio)
	api.HandleFunc("GET /stdio", s.handleListStdio)
	api.HandleFunc("POST /stdio/{cmd_id}/stdin", s.handleStdioStdin)
	api.HandleFunc("POST /stdio/{cmd_id}/stdin/close", s.handleStdioClose)
	api.HandleFunc("DELETE /stdio/{cmd_id}", s.handleStdioKill)
	api.HandleFunc("GET /stdio/{cmd_id}/stream", s.handleStdioStream)

	api.HandleFunc("POST /pty", s.handleStartPty)
	api.HandleFunc("GET /pty/{pid}/stream", s.handlePtyStream)
	api.HandleFunc("POST /pty/{pid}/stdin", s.handlePtyStdin)
	api.HandleFunc("PATCH /pty/{pid}", s.handlePtyResize)
	api.HandleFunc("DELETE /pty/{pid}", s.handlePtyKill)

	api.HandleFunc("GET /files", s.handleRead)
	api.HandleFunc("GET /files/raw", s.handleRead)
	api.HandleFunc("POST /files", s.handleWrite)
	api.HandleFunc("PUT /files/raw", s.handleWriteRaw)
	api.HandleFunc("POST /files/batch", s.handleWriteBatch)
	api.HandleFunc("GET /files/list", s.handleListDir)
	api.HandleFunc("GET /files/exists", s.handleExists)
	api.HandleFunc("GET /files/info", s.handleInfo)
	api.HandleFunc("DELETE /files", s.handleRemove)
	api.HandleFunc("PATCH /files", s.handleRename)
	api.HandleFunc("POST /files/mkdir", s.handleMkdir)
	api.HandleFunc("POST /files/watch", s.handleWatchCreate)
	api.HandleFunc("GET /files/watch", s.handleWatchOnce)
	api.HandleFunc("GET /files/watch/{watcher_id}/stream", s.handleWatchStream)
	api.HandleFunc("DELETE /files/watch/{watcher_id}", s.handleWatchDelete)

	root := http.NewServeMux()
	root.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	root.Handle("/", requireToken(s.cfg.AccessToken, s.cfg.Insecure, api))
	return root
}

func (s *Server) handleInit(w http.ResponseWriter, r *http.Request) {
	var req envdapi.InitRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	for k, v := range req.Envs {
		if err := process.ValidateEnv(k, v); err != nil {
			writeError(w, err)
			return
		}
	}
	if req.CACert != "" {
		if err := installCA(s.cfg.FSRoot, req.CACert); err != nil {
			writeError(w, err)
			return
		}
	}
	s.mu.Lock()
	s.envs = maps.Clone(req.Envs)
	s.mu.Unlock()
	if req.Hostname != "" {
		if err := s.cfg.SetHostname(req.Hostname); err != nil {
			s.cfg.Logf("init: set hostname %q: %v", req.Hostname, err)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleWarmup runs the shell once so that the first user command finds
// it in the page cache (see process.Warmup). The server's warm pool calls
// it on every sandbox it boots, before anyone owns the sandbox.
func (s *Server) handleWarmup(w http.ResponseWriter, r *http.Request) {
	if err := process.Warmup(30 * time.Second); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// sandboxEnvs returns the envs set by /init.
func (s *Server) sandboxEnvs() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.envs // replaced, never modified in place
}

var _ http.Handler = (*Server)(nil)
