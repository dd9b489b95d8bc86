// Package envdapi holds the wire contract between the declaw server and envd,
// the agent that runs as PID 1 inside every sandbox.
//
// envd serves the per-sandbox part of the public API with the same paths and
// bodies, minus the "/sandboxes/{id}" prefix: the server authenticates the
// user, checks the sandbox state and then forwards "/sandboxes/{id}/REST" to
// envd's "/REST" unchanged (streaming, not buffered). So a public request
// "POST /sandboxes/sbx-1/commands" reaches envd as "POST /commands".
//
// envd authenticates every request but GET /health with the header
// AccessTokenHeader, whose value envd reads at start from the environment
// variable AccessTokenEnv (and then removes from its own environment).
//
// Errors are JSON {"message": "...", "code": "..."} with these statuses:
// 400 bad input, 404 unknown pid / missing file, 408 command timed out,
// 409 conflict (e.g. mkdir over a file), 413 body too large, 500 otherwise.
package envdapi

// Port is the TCP port envd listens on inside the sandbox.
const Port = 49983

// AccessTokenHeader carries the per-sandbox token on every request to envd.
const AccessTokenHeader = "X-Access-Token"

// AccessTokenEnv is the environment variable through which envd gets its token.
const AccessTokenEnv = "ENVD_ACCESS_TOKEN"

// MaxJSONBody is the largest JSON request body accepted (413 above it).
const MaxJSONBody = 10 << 20

// Defaults.
const (
	DefaultUser           = "root"
	DefaultCommandTimeout = 60 // seconds; 0 = no timeout
)

// Error is the error body of every non-2xx answer.
type Error struct {
	Message string `json:"message"`
	Code    string `json:"code,omitempty"`
}

// InitRequest is POST /init, sent by the server once before the sandbox is
// handed to a user. It sets the sandbox-wide environment that every process
// gets (after the defaults HOME, PATH, LANG, USER, ... and before the
// request's own envs). It may be sent again to replace them.
type InitRequest struct {
	Envs     map[string]string `json:"envs,omitempty"`
	Hostname string            `json:"hostname,omitempty"`
	// CACert is the PEM certificate of the sandbox's own CA (the egress
	// proxy signs intercepted TLS with it). envd writes it to CACertPath and
	// appends it to the system bundle SystemCABundle, once, before the
	// sandbox runs any user command. Its key never enters the sandbox.
	CACert string `json:"ca_cert,omitempty"`
}

// Where envd installs the sandbox CA (see InitRequest.CACert).
const (
	CACertPath     = "/etc/declaw/ca/declaw-ca.pem"
	SystemCABundle = "/etc/ssl/certs/ca-certificates.crt"
)

// CommandRequest is POST /commands and POST /commands/stream.
type CommandRequest struct {
	Cmd        string            `json:"cmd"` // run with /bin/bash -c (sh if no bash); not a login shell, so /etc/profile cannot reset the envs
	Background bool              `json:"background,omitempty"`
	User       string            `json:"user,omitempty"`    // default root
	Envs       map[string]string `json:"envs,omitempty"`    // merged over the sandbox envs
	Cwd        string            `json:"cwd,omitempty"`     // default: the user's home
	Stdin      bool              `json:"stdin,omitempty"`   // keep a stdin pipe open (background)
	Timeout    *float64          `json:"timeout,omitempty"` // seconds; nil = 60, 0 = none
	Tag        string            `json:"tag,omitempty"`
}

// CommandResult is the answer of a foreground POST /commands and of
// GET /commands/{pid}/wait. A non-zero exit code is data, not an error.
type CommandResult struct {
	Pid      int    `json:"pid"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exit_code"`
	Error    string `json:"error,omitempty"`
}

// BackgroundStarted is the answer of a background POST /commands.
type BackgroundStarted struct {
	Pid int `json:"pid"`
}

// ProcessInfo is one entry of GET /commands.
type ProcessInfo struct {
	Pid   int               `json:"pid"`
	Cmd   string            `json:"cmd"`
	IsPty bool              `json:"is_pty"`
	Envs  map[string]string `json:"envs"`
	Tag   string            `json:"tag,omitempty"`
	Cwd   string            `json:"cwd,omitempty"`
	User  string            `json:"user,omitempty"`
	Kind  string            `json:"kind,omitempty"` // "command", "pty" or "stdio"
}

// StdinRequest is POST /commands/{pid}/stdin.
type StdinRequest struct {
	Data string `json:"data"`
}

// KillResult is DELETE /commands/{pid}.
type KillResult struct {
	Killed bool `json:"killed"`
}

// StreamEvent is the JSON data of one SSE event of POST /commands/stream.
// Events: "start" {pid}, "stdout"/"stderr" {type, stream, data}, then
// "exit" {type:"exit", exit_code} or "error" {type:"error", error}.
type StreamEvent struct {
	Type     string `json:"type"`
	Stream   string `json:"stream,omitempty"`
	Data     string `json:"data,omitempty"`
	Pid      int    `json:"pid,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Error    string `json:"error,omitempty"`
	// EntryID numbers output events (stdout/stderr) in output order across
	// both streams; GET /commands/{pid}/stream?last_entry_id=N resumes
	// after entry N. Also sent as the SSE id.
	EntryID uint64 `json:"entry_id,omitempty"`
	// Code is set on "gap" events: CodeOutputDropped.
	Code string `json:"code,omitempty"`
}

// WriteRequest is POST /files (text write).
type WriteRequest struct {
	Path     string `json:"path"`
	Data     string `json:"data"`
	Username string `json:"username,omitempty"`
}

// WriteResult answers writes.
type WriteResult struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// BatchWriteRequest is POST /files/batch.
type BatchWriteRequest struct {
	Files    []WriteRequest `json:"files"`
	Username string         `json:"username,omitempty"`
}

// RenameRequest is PATCH /files.
type RenameRequest struct {
	OldPath  string `json:"old_path"`
	NewPath  string `json:"new_path"`
	Username string `json:"username,omitempty"`
}

// MkdirRequest is POST /files/mkdir.
type MkdirRequest struct {
	Path     string `json:"path"`
	Username string `json:"username,omitempty"`
}

// MkdirResult answers mkdir; Created is false if the directory existed.
type MkdirResult struct {
	Created bool `json:"created"`
}

// ExistsResult answers GET /files/exists.
type ExistsResult struct {
	Exists bool `json:"exists"`
}

// EntryInfo is one file system entry (list, info, rename).
type EntryInfo struct {
	Name          string `json:"name"`
	Path          string `json:"path"`
	Type          string `json:"type"` // "file" | "dir" | "symlink"
	Size          int64  `json:"size"`
	Mode          uint32 `json:"mode"`
	Permissions   string `json:"permissions"`
	Owner         string `json:"owner"`
	Group         string `json:"group"`
	ModifiedTime  string `json:"modified_time"` // RFC 3339
	SymlinkTarget string `json:"symlink_target,omitempty"`
}

// Error codes envd returns that clients branch on.
const (
	CodeCommandTimeout = "command_timeout" // 408: a foreground command hit its timeout and was killed
	CodeWaitTimeout    = "wait_timeout"    // 408: GET /commands/{pid}/wait?timeout= expired; the process still runs
)

// TimeoutError is the 408 body of a foreground command that timed out (code
// CodeCommandTimeout; the process tree was killed) or of a wait whose
// timeout expired (code CodeWaitTimeout; exit_code is -1, the process still
// runs). It is an Error plus the output collected so far.
type TimeoutError struct {
	Message  string `json:"message"`
	Code     string `json:"code"`
	Pid      int    `json:"pid"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exit_code"`
}

// MaxRawUpload is the largest body accepted by PUT /files/raw (413 above it).
const MaxRawUpload = 500 << 20

// DefaultPtyTimeout is the default timeout of a PTY session, in seconds.
const DefaultPtyTimeout = 3600

// PtySize is a terminal size in cells.
type PtySize struct {
	Cols uint16 `json:"cols"`
	Rows uint16 `json:"rows"`
}

// PtyRequest is POST /pty; the answer is BackgroundStarted {pid}.
type PtyRequest struct {
	Size    PtySize           `json:"size"`
	User    string            `json:"user,omitempty"`    // default root
	Cwd     string            `json:"cwd,omitempty"`     // default: the user's home
	Envs    map[string]string `json:"envs,omitempty"`    // merged over the sandbox envs; TERM defaults to xterm-256color
	Timeout *float64          `json:"timeout,omitempty"` // seconds; nil = DefaultPtyTimeout, 0 = none
	Cmd     string            `json:"cmd,omitempty"`     // run with bash -c; default an interactive shell (bash -i)
	Tag     string            `json:"tag,omitempty"`
}

// PtyResizeRequest is PATCH /pty/{pid}.
type PtyResizeRequest struct {
	Size PtySize `json:"size"`
}

// PtyEvent is the JSON data of one SSE event of GET /pty/{pid}/stream.
// Events: "data" {type:"data", data: base64 of terminal output, entry_id},
// "gap" if output was dropped (see OutputCap), then "exit" {type:"exit",
// exit_code, error?}. What a stream starts with is described at
// PtyScrollback; several may run at once, and a disconnect does not end
// the process. POST /pty/{pid}/stdin takes a StdinRequest whose data is
// text (not base64); DELETE /pty/{pid} answers KillResult.
type PtyEvent struct {
	Type     string `json:"type"`
	Data     string `json:"data,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Error    string `json:"error,omitempty"`
	EntryID  uint64 `json:"entry_id,omitempty"` // see PtyScrollback; ?last_entry_id=N resumes after entry N
	Code     string `json:"code,omitempty"`     // "gap" events: CodeOutputDropped
}

// PtyScrollback is how much recent terminal output (bytes) GET
// /pty/{pid}/stream replays to a subscriber that is not the first one and
// gives no last_entry_id. The first subscriber of a PTY gets all its
// output from the start (up to OutputCap), so output the process wrote
// before the client connected is not lost.
const PtyScrollback = 64 << 10

// OutputCap is how many bytes of output envd retains per stream (stdout,
// stderr, pty) of each process by default; older output is dropped, except
// that POST /commands/stream holds its command back instead until its
// client received it. A stream resumed from before dropped output gets a
// "gap" event first.
const OutputCap = 16 << 20

// CodeOutputDropped is the code of a "gap" event: output between the
// reader's position and the next event was dropped (see OutputCap) and
// cannot be delivered. The stream continues after it.
const CodeOutputDropped = "output_dropped"

// StdioRequest is POST /stdio: a process whose stdin stays open as a pipe
// until POST /stdio/{cmd_id}/stdin/close. The answer is StdioStarted.
type StdioRequest struct {
	Cmd     string            `json:"cmd"`               // run with bash -c (sh without bash)
	User    string            `json:"user,omitempty"`    // default root
	Envs    map[string]string `json:"envs,omitempty"`    // merged over the sandbox envs
	Cwd     string            `json:"cwd,omitempty"`     // default: the user's home
	Timeout *float64          `json:"timeout,omitempty"` // seconds; nil or 0 = none
	Tag     string            `json:"tag,omitempty"`
}

// StdioStarted answers POST /stdio. CmdID names the session in the
// /stdio/{cmd_id} routes; it is the pid in decimal.
type StdioStarted struct {
	CmdID string `json:"cmd_id"`
	Pid   int    `json:"pid"`
}

// StdioStdinRequest is POST /stdio/{cmd_id}/stdin: Data is base64
// (standard alphabet, padding optional) of the bytes to write.
type StdioStdinRequest struct {
	Data string `json:"data"`
}

// StdioEvent is the JSON data of one SSE event of GET
// /stdio/{cmd_id}/stream. Events: "stdout"/"stderr" {type, stream, data:
// base64, entry_id}, "gap" {type:"gap", code, error} when output was
// dropped before it could be delivered, then one "exit" {type:"exit",
// exit_code, error?}. Entry ids count output chunks of both streams in
// order from 1; ?last_entry_id=N (or the Last-Event-ID header) resumes
// after entry N, with nothing lost or repeated.
type StdioEvent struct {
	Type     string `json:"type"`
	Stream   string `json:"stream,omitempty"`
	Data     string `json:"data,omitempty"`
	EntryID  uint64 `json:"entry_id,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Error    string `json:"error,omitempty"`
	Code     string `json:"code,omitempty"`
}

// StdioInfo is one entry of GET /stdio (running sessions, by pid).
type StdioInfo struct {
	CmdID string `json:"cmd_id"`
	Pid   int    `json:"pid"`
	Cmd   string `json:"cmd"`
	Tag   string `json:"tag,omitempty"`
}

// WatchRequest is POST /files/watch. The answer is WatchStarted.
type WatchRequest struct {
	Path      string `json:"path"` // a directory; relative to the user's home
	Recursive bool   `json:"recursive,omitempty"`
	Username  string `json:"username,omitempty"` // resolves relative paths; default root
}

// WatchStarted answers POST /files/watch.
type WatchStarted struct {
	WatcherID string `json:"watcher_id"`
}

// WatchEvent is the JSON data of one SSE event of GET
// /files/watch/{watcher_id}/stream (and of the one-shot GET
// /files/watch?path=&recursive=). Type is the event name: first "start"
// {watcher_id, path} once the directory is watched, then "create",
// "write", "remove", "rename", "chmod", "gap" (events were lost: the
// kernel queue or the watcher's buffer overflowed) or "error". Path is
// absolute, Name relative to the watched directory. EventID is also the
// SSE id; ?last_event_id=N resumes after event N.
type WatchEvent struct {
	Type      string `json:"type"`
	Path      string `json:"path,omitempty"`
	Name      string `json:"name,omitempty"`
	IsDir     bool   `json:"is_dir,omitempty"`
	Timestamp string `json:"timestamp"` // RFC 3339, UTC, nanoseconds
	EventID   uint64 `json:"event_id,omitempty"`
	Error     string `json:"error,omitempty"`
	WatcherID string `json:"watcher_id,omitempty"` // on "start"
}
