package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/sdk/go/declaw"
)

// sdkClient is a Go SDK client of s (dialling inside the test host).
func (s *server) sdkClient(key string) *declaw.Client {
	s.t.Helper()
	cl, err := declaw.New(declaw.Config{APIURL: s.base, APIKey: key, HTTPClient: s.client})
	if err != nil {
		s.t.Fatal(err)
	}
	return cl
}

// TestGoSDK drives a real server through the public Go SDK
// (sdk/go/declaw): create, list, info, timeout, commands (run, stream,
// timeout, background with stdin, connect, list, kill), files, a
// directory watch, a PTY, metrics, network update, pause and resume,
// snapshot and restore in place, audit, kill, and the typed errors.
func TestGoSDK(t *testing.T) {
	s := startServer(t)
	cl := s.sdkClient(s.key)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	if h, err := s.sdkClient("").Health(ctx); err != nil || h.Status != "ok" || h.Runtime == "" || h.Memory == nil || h.Memory.CapacityMB <= 0 {
		t.Fatalf("Health without a key = %+v, %v", h, err)
	}

	// Errors before any sandbox exists.
	if _, err := s.sdkClient("wrong-key").ListSandboxes(ctx, declaw.ListQuery{}); !errors.Is(err, declaw.ErrUnauthorized) {
		t.Fatalf("list with a wrong key: %v, want ErrUnauthorized", err)
	}
	if _, err := cl.GetSandbox(ctx, "sbx-000000000000"); !errors.Is(err, declaw.ErrNotFound) {
		t.Fatalf("get an unknown sandbox: %v, want ErrNotFound", err)
	}
	var apiErr *declaw.Error
	if _, err := cl.CreateSandbox(ctx, declaw.CreateRequest{Template: "no-such-template"}); !errors.As(err, &apiErr) || apiErr.Code != "template_not_found" || !errors.Is(err, declaw.ErrNotFound) {
		t.Fatalf("create from an unknown template: %v, want 404 template_not_found", err)
	}

	// Create, with a security policy, and find it.
	tag := "gosdk-" + randHex(4)
	sb, err := cl.CreateSandbox(ctx, declaw.CreateRequest{
		Template: "base", Timeout: declaw.Ptr(600), Metadata: map[string]string{"test": tag},
		Envs:     map[string]string{"GREETING": "hello"},
		Security: &declaw.SecurityPolicy{Audit: &declaw.AuditConfig{Enabled: declaw.Ptr(true)}},
	})
	if err != nil {
		t.Fatalf("CreateSandbox: %v", err)
	}
	id := sb.SandboxID
	t.Cleanup(func() { cl.KillSandbox(context.WithoutCancel(ctx), id) })
	if sb.State != "running" || sb.TemplateID != "base" {
		t.Fatalf("created sandbox = %+v", sb)
	}
	page, err := cl.ListSandboxes(ctx, declaw.ListQuery{Metadata: map[string]string{"test": tag}})
	if err != nil || len(page.Sandboxes) != 1 || page.Sandboxes[0].SandboxID != id {
		t.Fatalf("ListSandboxes by metadata = %+v, %v; want only %s", page, err, id)
	}
	n := 0
	for got, err := range cl.AllSandboxes(ctx, declaw.ListQuery{Metadata: map[string]string{"test": tag}, Limit: 1}) {
		if err != nil || got.SandboxID != id {
			t.Fatalf("AllSandboxes by metadata yielded %+v, %v", got, err)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("AllSandboxes by metadata yielded %d sandboxes, want 1", n)
	}
	if got, err := cl.SetTimeout(ctx, id, 900); err != nil || got.EndAt == nil || time.Until(*got.EndAt) < 800*time.Second {
		t.Fatalf("SetTimeout(900) = %+v, %v", got, err)
	}

	// Commands: run, stream, timeout.
	res, err := cl.RunCommand(ctx, id, declaw.CommandRequest{Cmd: `echo "$GREETING"; echo oops >&2; exit 3`})
	if err != nil || res.ExitCode != 3 || res.Stdout != "hello\n" || res.Stderr != "oops\n" {
		t.Fatalf("RunCommand = %+v, %v; want exit 3, hello, oops", res, err)
	}
	var out strings.Builder
	var types []string
	for ev, err := range cl.StreamCommand(ctx, id, declaw.CommandRequest{Cmd: "for i in 1 2 3; do echo $i; sleep 0.2; done"}) {
		if err != nil {
			t.Fatalf("StreamCommand: %v", err)
		}
		types = append(types, ev.Type)
		if ev.Type == "stdout" {
			out.WriteString(ev.Data)
		}
		if ev.Type == "exit" && *ev.ExitCode != 0 {
			t.Fatalf("streamed command exit %d", *ev.ExitCode)
		}
	}
	if out.String() != "1\n2\n3\n" || types[0] != "start" || types[len(types)-1] != "exit" {
		t.Fatalf("StreamCommand output %q, events %v", out.String(), types)
	}
	if _, err := cl.RunCommand(ctx, id, declaw.CommandRequest{Cmd: "sleep 30", Timeout: declaw.Ptr(1.0)}); !errors.Is(err, declaw.ErrTimeout) {
		t.Fatalf("a command over its timeout: %v, want ErrTimeout", err)
	}
	var sawTimeout error
	for _, err := range cl.StreamCommand(ctx, id, declaw.CommandRequest{Cmd: "sleep 30", Timeout: declaw.Ptr(1.0)}) {
		sawTimeout = err
	}
	if !errors.Is(sawTimeout, declaw.ErrTimeout) {
		t.Fatalf("a streamed command over its timeout: %v, want ErrTimeout", sawTimeout)
	}

	// Background commands: stdin, wait, list, connect, kill.
	pid, err := cl.StartCommand(ctx, id, declaw.CommandRequest{Cmd: `read x; echo "got $x"`, Stdin: true})
	if err != nil {
		t.Fatalf("StartCommand: %v", err)
	}
	if err := cl.SendStdin(ctx, id, pid, "ping\n"); err != nil {
		t.Fatalf("SendStdin: %v", err)
	}
	if res, err := cl.WaitCommand(ctx, id, pid); err != nil || res.Stdout != "got ping\n" || res.ExitCode != 0 {
		t.Fatalf("WaitCommand = %+v, %v", res, err)
	}
	pid, err = cl.StartCommand(ctx, id, declaw.CommandRequest{Cmd: "echo started; sleep 600", Tag: tag})
	if err != nil {
		t.Fatalf("StartCommand: %v", err)
	}
	ps, err := cl.ListCommands(ctx, id)
	if err != nil || !slices.ContainsFunc(ps, func(p declaw.Process) bool { return p.Pid == pid && p.Tag == tag }) {
		t.Fatalf("ListCommands = %+v, %v; want pid %d tagged %s", ps, err, pid, tag)
	}
	cctx, ccancel := context.WithCancel(ctx)
	_, err = cl.ConnectCommand(cctx, id, pid, func(ev declaw.CommandEvent) error {
		if ev.Type == "stdout" && strings.Contains(ev.Data, "started") {
			ccancel() // disconnect: the process keeps running
		}
		return nil
	})
	ccancel()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("ConnectCommand ended with %v, want the cancel", err)
	}
	if k, err := cl.KillCommand(ctx, id, pid); err != nil || !k {
		t.Fatalf("KillCommand of a process still running after a disconnect = %v, %v; want true", k, err)
	}
	if k, err := cl.KillCommand(ctx, id, 999999); err != nil || k {
		t.Fatalf("KillCommand of an unknown pid = %v, %v; want false, nil", k, err)
	}

	// A stdio session: binary stdin, closed, output read back.
	st, err := cl.StartStdio(ctx, id, declaw.StdioRequest{Cmd: "od -An -tx1"})
	if err != nil {
		t.Fatalf("StartStdio: %v", err)
	}
	if err := st.Write(ctx, []byte{0x00, 0xff, 0x0a}); err != nil {
		t.Fatalf("StdioSession.Write: %v", err)
	}
	if err := st.CloseStdin(ctx); err != nil {
		t.Fatalf("CloseStdin: %v", err)
	}
	var stdio strings.Builder
	exit := -2
	for ev, err := range st.Output(ctx) {
		if err != nil {
			t.Fatalf("stdio output: %v", err)
		}
		switch ev.Type {
		case "stdout":
			stdio.Write(ev.Data)
		case "exit":
			exit = ev.ExitCode
		}
	}
	if exit != 0 || strings.TrimSpace(stdio.String()) != "00 ff 0a" {
		t.Fatalf("stdio session: exit %d, output %q; want 0 and 00 ff 0a", exit, stdio.String())
	}

	// Files.
	if _, err := cl.Write(ctx, id, "/tmp/sdk/a.txt", []byte("alpha")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if b, err := cl.Read(ctx, id, "/tmp/sdk/a.txt"); err != nil || string(b) != "alpha" {
		t.Fatalf("Read = %q, %v", b, err)
	}
	if e, err := cl.Stat(ctx, id, "/tmp/sdk/a.txt"); err != nil || e.Size != 5 || e.Type != "file" {
		t.Fatalf("Stat = %+v, %v", e, err)
	}
	if created, err := cl.MakeDir(ctx, id, "/tmp/sdk/d/e"); err != nil || !created {
		t.Fatalf("MakeDir = %v, %v", created, err)
	}
	if e, err := cl.Rename(ctx, id, "/tmp/sdk/a.txt", "/tmp/sdk/d/b.txt"); err != nil || e.Path != "/tmp/sdk/d/b.txt" {
		t.Fatalf("Rename = %+v, %v", e, err)
	}
	entries, err := cl.ListFiles(ctx, id, "/tmp/sdk", 3, "")
	if err != nil || !slices.ContainsFunc(entries, func(e declaw.Entry) bool { return e.Path == "/tmp/sdk/d/b.txt" }) {
		t.Fatalf("ListFiles depth 3 = %+v, %v", entries, err)
	}
	wr, err := cl.WriteFiles(ctx, id, []declaw.FileData{{Path: "/tmp/sdk/m/1.txt", Data: []byte("one")},
		{Path: "/tmp/sdk/m/2.bin", Data: []byte{0, 0xff}}, {Path: "/tmp/sdk/m/3.txt", Data: []byte("three")}})
	if err != nil || len(wr) != 3 || wr[1].Size != 2 || wr[2].Size != 5 {
		t.Fatalf("WriteFiles = %+v, %v", wr, err)
	}
	if res, err := cl.RunCommand(ctx, id, declaw.CommandRequest{Cmd: "cat /tmp/sdk/m/1.txt /tmp/sdk/m/3.txt; od -An -tx1 /tmp/sdk/m/2.bin"}); err != nil || res.Stdout != "onethree 00 ff\n" {
		t.Fatalf("files written by WriteFiles: %+v, %v", res, err)
	}
	if err := cl.Remove(ctx, id, "/tmp/sdk/d"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if ok, err := cl.Exists(ctx, id, "/tmp/sdk/d/b.txt"); err != nil || ok {
		t.Fatalf("Exists after Remove = %v, %v", ok, err)
	}
	if _, err := cl.Stat(ctx, id, "/tmp/sdk/d"); !errors.Is(err, declaw.ErrNotFound) {
		t.Fatalf("Stat of a removed directory: %v, want ErrNotFound", err)
	}

	// A directory watch sees a command's writes.
	if _, err := cl.MakeDir(ctx, id, "/tmp/watched"); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	w, err := cl.WatchDir(wctx, id, "/tmp/watched", declaw.WatchOptions{Recursive: true})
	if err != nil {
		t.Fatalf("WatchDir: %v", err)
	}
	if _, err := cl.RunCommand(ctx, id, declaw.CommandRequest{Cmd: "mkdir /tmp/watched/sub && echo x > /tmp/watched/sub/f.txt"}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for ev, err := range w.Events() {
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		seen[ev.Type+" "+ev.Name] = true
		if seen["create sub"] && seen["create sub/f.txt"] {
			break
		}
	}
	if !seen["create sub"] || !seen["create sub/f.txt"] {
		t.Fatalf("watch events %v: want the create of sub and sub/f.txt (ended: %v)", seen, wctx.Err())
	}
	if err := w.Stop(ctx); err != nil {
		t.Fatalf("Watcher.Stop: %v", err)
	}
	wcancel()

	// PTY: type into a shell, read its echo, exit.
	ptyPid, err := cl.CreatePty(ctx, id, declaw.PtyRequest{Size: declaw.PtySize{Cols: 80, Rows: 24}})
	if err != nil {
		t.Fatalf("CreatePty: %v", err)
	}
	stream, err := cl.StreamPty(ctx, id, ptyPid)
	if err != nil {
		t.Fatalf("StreamPty: %v", err)
	}
	if err := cl.ResizePty(ctx, id, ptyPid, declaw.PtySize{Cols: 100, Rows: 30}); err != nil {
		t.Fatalf("ResizePty: %v", err)
	}
	if err := cl.SendPtyInput(ctx, id, ptyPid, "echo pty-$((40+2)) $(stty size)\nexit 7\n"); err != nil {
		t.Fatalf("SendPtyInput: %v", err)
	}
	var term strings.Builder
	for {
		ev, err := stream.Next()
		if err != nil {
			t.Fatalf("pty stream: %v (output so far %q)", err, term.String())
		}
		if ev.Type == "exit" {
			if ev.ExitCode != 7 {
				t.Fatalf("pty exit code %d, want 7", ev.ExitCode)
			}
			break
		}
		term.Write(ev.Data)
	}
	stream.Close()
	if !strings.Contains(term.String(), "pty-42 30 100") {
		t.Fatalf("pty output %q: want pty-42 30 100", term.String())
	}

	// Metrics, network update, pause and resume.
	if _, err := cl.Metrics(ctx, id, time.Time{}, time.Time{}); err != nil {
		t.Fatalf("Metrics: %v", err)
	}
	if got, err := cl.UpdateNetwork(ctx, id, declaw.Network{DenyOut: []string{"0.0.0.0/0"}}); err != nil || !strings.Contains(string(got.Network), "0.0.0.0/0") {
		t.Fatalf("UpdateNetwork = %+v, %v", got, err)
	}
	if _, err := cl.Pause(ctx, id); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if _, err := cl.RunCommand(ctx, id, declaw.CommandRequest{Cmd: "true"}); !errors.Is(err, declaw.ErrConflict) {
		t.Fatalf("a command in a paused sandbox: %v, want ErrConflict", err)
	}
	if got, err := cl.Connect(ctx, id, declaw.Ptr(600)); err != nil || got.State != "running" {
		t.Fatalf("Connect to the paused sandbox = %+v, %v; want it resumed", got, err)
	}

	// Snapshot, change a file, restore in place.
	if _, err := cl.Write(ctx, id, "/tmp/state.txt", []byte("before")); err != nil {
		t.Fatal(err)
	}
	snap, err := cl.CreateSnapshot(ctx, id)
	if err != nil {
		t.Fatalf("CreateSnapshot: %v", err)
	}
	if _, err := cl.Write(ctx, id, "/tmp/state.txt", []byte("after")); err != nil {
		t.Fatal(err)
	}
	if r, err := cl.Restore(ctx, id, declaw.RestoreOptions{SnapshotID: snap.SnapshotID}); err != nil || r.SandboxID != id {
		t.Fatalf("Restore in place = %+v, %v", r, err)
	}
	if b, err := cl.Read(ctx, id, "/tmp/state.txt"); err != nil || string(b) != "before" {
		t.Fatalf("after the restore /tmp/state.txt = %q, %v; want the snapshot's", b, err)
	}

	// Audit, kill, and what a killed sandbox answers.
	ap, err := cl.Audit(ctx, id, declaw.AuditQuery{Types: []string{"sandbox"}})
	if err != nil || !slices.ContainsFunc(ap.Events, func(e declaw.AuditEvent) bool { return e.Type == "sandbox.created" }) {
		t.Fatalf("Audit = %+v, %v; want sandbox.created", ap, err)
	}
	var auditTypes []string
	for ev, err := range cl.AllAuditEvents(ctx, id, declaw.AuditQuery{Limit: 2}) {
		if err != nil {
			t.Fatalf("AllAuditEvents: %v", err)
		}
		auditTypes = append(auditTypes, ev.Type)
	}
	if len(auditTypes) <= 2 || !slices.Contains(auditTypes, "sandbox.created") || !slices.Contains(auditTypes, "vm_restore") {
		t.Fatalf("AllAuditEvents in pages of 2 = %v; want more than one page, with sandbox.created and vm_restore", auditTypes)
	}
	if k, err := cl.KillSandbox(ctx, id); err != nil || !k {
		t.Fatalf("KillSandbox = %v, %v", k, err)
	}
	if got, err := cl.GetSandbox(ctx, id); err != nil || got.State != "killed" {
		t.Fatalf("GetSandbox after kill = %+v, %v", got, err)
	}
	if _, err := cl.RunCommand(ctx, id, declaw.CommandRequest{Cmd: "true"}); !errors.Is(err, declaw.ErrSandboxKilled) {
		t.Fatalf("a command in a killed sandbox: %v, want ErrSandboxKilled", err)
	}
}

// TestGoSDKTemplate builds a custom template through the Go SDK, with a
// file copied from an uploaded build context, and uses it.
func TestGoSDKTemplate(t *testing.T) {
	s := startServer(t)
	cl := s.sdkClient(s.key)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	alias := "gosdk-" + randHex(4)
	t.Cleanup(func() { cl.DeleteTemplate(context.WithoutCancel(ctx), alias, true) })

	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	content := []byte("from the build context\n")
	tw.WriteHeader(&tar.Header{Name: "hello.txt", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
	tw.Write(content)
	tw.Close()

	var logs []string
	st, err := cl.BuildTemplate(ctx, declaw.TemplateBuildRequest{Alias: alias, Force: true, Template: declaw.TemplateSpec{
		BaseImage: "base",
		RunCmds:   []string{"echo built-$((6*7)) > /opt/marker"},
		Copies:    []declaw.TemplateCopy{{Src: "hello.txt", Dst: "/opt/hello.txt"}},
		Envs:      map[string]string{"SDK_TEMPLATE": "yes"},
	}, Background: true}, &tarball)
	if err != nil {
		t.Fatalf("BuildTemplate: %v", err)
	}
	if st.Status != "building" && st.Status != "completed" {
		t.Fatalf("background build answered %+v", st)
	}
	if st.Status == "building" {
		st, err = cl.FollowBuild(ctx, st.BuildID, 0, func(line string) { logs = append(logs, line) })
		if err != nil {
			t.Fatalf("FollowBuild: %v", err)
		}
	}
	if st.Status != "completed" {
		t.Fatalf("build ended %+v (logs %q)", st, logs)
	}
	ts, err := cl.Templates(ctx)
	if err != nil || !slices.ContainsFunc(ts, func(ti declaw.TemplateInfo) bool { return ti.Alias == alias && !ti.Builtin }) {
		t.Fatalf("Templates = %+v, %v; want %s", ts, err, alias)
	}
	ti, err := cl.Template(ctx, alias)
	if err != nil || ti.TemplateID != st.TemplateID || ti.Envs["SDK_TEMPLATE"] != "yes" {
		t.Fatalf("Template(%s) = %+v, %v", alias, ti, err)
	}
	sb, err := cl.CreateSandbox(ctx, declaw.CreateRequest{Template: alias, Timeout: declaw.Ptr(120)})
	if err != nil {
		t.Fatalf("create from the built template: %v", err)
	}
	res, err := cl.RunCommand(ctx, sb.SandboxID, declaw.CommandRequest{Cmd: `cat /opt/marker /opt/hello.txt; echo "$SDK_TEMPLATE"`})
	if err != nil || res.Stdout != "built-42\nfrom the build context\nyes\n" {
		t.Fatalf("in a sandbox of the template: %+v, %v", res, err)
	}
	if _, err := cl.KillSandbox(ctx, sb.SandboxID); err != nil {
		t.Fatal(err)
	}
	if err := cl.DeleteTemplate(ctx, alias, false); err != nil {
		t.Fatalf("DeleteTemplate: %v", err)
	}
	if _, err := cl.Template(ctx, alias); !errors.Is(err, declaw.ErrNotFound) {
		t.Fatalf("Template after delete: %v, want ErrNotFound", err)
	}
}
