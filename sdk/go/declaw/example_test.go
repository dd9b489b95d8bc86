package declaw_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	"github.com/declaw/declaw/sdk/go/declaw"
)

// The examples below need a declaw server, so they have no Output comment:
// go test compiles them but does not run them. The real-server test is
// e2e/TestGoSDK.

// A sandbox's life: create, run a command, read a file back, kill.
func Example() {
	ctx := context.Background()
	cl, err := declaw.New(declaw.Config{
		Domain: os.Getenv("DECLAW_DOMAIN"), // e.g. 127.0.0.1:8080
		APIKey: os.Getenv("DECLAW_API_KEY"),
	})
	if err != nil {
		log.Fatal(err)
	}
	sb, err := cl.CreateSandbox(ctx, declaw.CreateRequest{Template: "python", Timeout: declaw.Ptr(300)})
	if err != nil {
		log.Fatal(err)
	}
	defer cl.KillSandbox(context.WithoutCancel(ctx), sb.SandboxID)

	if _, err := cl.Write(ctx, sb.SandboxID, "/tmp/hello.py", []byte("print('hello from the sandbox')")); err != nil {
		log.Fatal(err)
	}
	res, err := cl.RunCommand(ctx, sb.SandboxID, declaw.CommandRequest{Cmd: "python3 /tmp/hello.py"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(res.Stdout) // a non-zero res.ExitCode is not an error
}

// A secured sandbox: no internet, and the security proxy redacts PII and
// blocks prompt injection on the domains it is told about.
func ExampleClient_CreateSandbox_securityPolicy() {
	ctx := context.Background()
	cl, _ := declaw.New(declaw.Config{APIKey: os.Getenv("DECLAW_API_KEY")})
	sb, err := cl.CreateSandbox(ctx, declaw.CreateRequest{
		Template: "python",
		Network:  &declaw.Network{AllowOut: []string{"api.openai.com"}, DenyOut: []string{"0.0.0.0/0"}},
		Security: &declaw.SecurityPolicy{
			PII: &declaw.PIIConfig{Enabled: true, Types: []string{declaw.PIIEmail, declaw.PIICreditCard}, Action: "redact"},
			InjectionDefense: &declaw.InjectionDefenseConfig{
				Enabled: true, Action: "block", Sensitivity: "high", Domains: []string{"api.openai.com"},
			},
			Audit: &declaw.AuditConfig{Enabled: declaw.Ptr(true), LogRequestBody: true},
		},
		CPUCount: declaw.Ptr(1.0),
		MemoryMB: declaw.Ptr[int64](1024),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(sb.SandboxID)
}

// Stream a command's output as it is produced, with a range-over-func loop.
func ExampleClient_StreamCommand() {
	ctx := context.Background()
	cl, _ := declaw.New(declaw.Config{APIKey: os.Getenv("DECLAW_API_KEY")})
	for ev, err := range cl.StreamCommand(ctx, "sbx-...", declaw.CommandRequest{Cmd: "pip install requests", Timeout: declaw.Ptr(120.0)}) {
		if errors.Is(err, declaw.ErrTimeout) {
			log.Fatal("the install took more than 2 minutes and was killed")
		}
		if err != nil {
			log.Fatal(err)
		}
		switch ev.Type {
		case "stdout":
			fmt.Print(ev.Data)
		case "stderr":
			fmt.Fprint(os.Stderr, ev.Data)
		case "exit":
			fmt.Println("exit code", *ev.ExitCode)
		}
	}
}

// A background server: start it with stdin open, follow its output for a
// while, type into it, then kill it.
func ExampleClient_StartCommand() {
	ctx := context.Background()
	cl, _ := declaw.New(declaw.Config{APIKey: os.Getenv("DECLAW_API_KEY")})
	id := "sbx-..."
	pid, err := cl.StartCommand(ctx, id, declaw.CommandRequest{Cmd: "python3 -i", Stdin: true, Timeout: declaw.Ptr(0.0)})
	if err != nil {
		log.Fatal(err)
	}
	if err := cl.SendStdin(ctx, id, pid, "print(6*7)\n"); err != nil {
		log.Fatal(err)
	}
	follow, stop := context.WithTimeout(ctx, 2*time.Second)
	defer stop()
	cl.ConnectCommand(follow, id, pid, func(ev declaw.CommandEvent) error { // leaving it keeps the process running
		fmt.Print(ev.Data)
		return nil
	})
	if _, err := cl.KillCommand(ctx, id, pid); err != nil {
		log.Fatal(err)
	}
}

// Watch a directory for changes until the context ends.
func ExampleClient_WatchDir() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, _ := declaw.New(declaw.Config{APIKey: os.Getenv("DECLAW_API_KEY")})
	w, err := cl.WatchDir(ctx, "sbx-...", "/home/user/project", declaw.WatchOptions{Recursive: true})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Stop(context.WithoutCancel(ctx))
	for ev, err := range w.Events() {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ev.Type, ev.Name)
	}
}

// An interactive terminal: start a shell on a PTY, type a command, read
// the screen output until the shell exits.
func ExampleClient_CreatePty() {
	ctx := context.Background()
	cl, _ := declaw.New(declaw.Config{APIKey: os.Getenv("DECLAW_API_KEY")})
	id := "sbx-..."
	pid, err := cl.CreatePty(ctx, id, declaw.PtyRequest{Size: declaw.PtySize{Cols: 120, Rows: 40}})
	if err != nil {
		log.Fatal(err)
	}
	stream, err := cl.StreamPty(ctx, id, pid) // open it before typing: there is no scrollback
	if err != nil {
		log.Fatal(err)
	}
	defer stream.Close()
	cl.SendPtyInput(ctx, id, pid, "ls -la\nexit\n")
	for {
		ev, err := stream.Next()
		if err != nil {
			log.Fatal(err)
		}
		if ev.Type == "exit" {
			fmt.Println("shell exited with", ev.ExitCode)
			return
		}
		os.Stdout.Write(ev.Data)
	}
}

// Snapshot a sandbox, then bring it back to the snapshot in place: the
// same id, the snapshot's files.
func ExampleClient_Restore() {
	ctx := context.Background()
	cl, _ := declaw.New(declaw.Config{APIKey: os.Getenv("DECLAW_API_KEY")})
	id := "sbx-..."
	snap, err := cl.CreateSnapshot(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	cl.RunCommand(ctx, id, declaw.CommandRequest{Cmd: "rm -rf /home/user/project"}) // oops
	if _, err := cl.Restore(ctx, id, declaw.RestoreOptions{SnapshotID: snap.SnapshotID}); err != nil {
		log.Fatal(err)
	}
	fork, err := cl.Restore(ctx, id, declaw.RestoreOptions{SnapshotID: snap.SnapshotID, Fork: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("a second sandbox from the same snapshot:", fork.SandboxID)
}

// Page through a sandbox's audit trail, e.g. the blocked egress.
func ExampleClient_Audit() {
	ctx := context.Background()
	cl, _ := declaw.New(declaw.Config{APIKey: os.Getenv("DECLAW_API_KEY")})
	q := declaw.AuditQuery{Types: []string{"egress.blocked"}, Since: time.Now().Add(-time.Hour)}
	for {
		page, err := cl.Audit(ctx, "sbx-...", q)
		if err != nil {
			log.Fatal(err)
		}
		for _, ev := range page.Events {
			fmt.Println(ev.Timestamp, ev.Type, string(ev.Data))
		}
		if page.NextCursor == "" {
			return
		}
		q.Cursor = page.NextCursor
	}
}

// API errors match the sentinels with errors.Is and keep the server's
// {"message","code"} for errors.As. This example runs against a stand-in
// server.
func ExampleError() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"sandbox sbx-0a1b2c3d4e5f: sandbox not found","code":"sandbox_not_found"}`)
	}))
	defer srv.Close()
	cl, _ := declaw.New(declaw.Config{APIURL: srv.URL})

	_, err := cl.GetSandbox(context.Background(), "sbx-0a1b2c3d4e5f")
	fmt.Println(errors.Is(err, declaw.ErrNotFound), errors.Is(err, declaw.ErrTimeout))
	var apiErr *declaw.Error
	if errors.As(err, &apiErr) {
		fmt.Println(apiErr.Status, apiErr.Code)
	}
	// Output:
	// true false
	// 404 sandbox_not_found
}
