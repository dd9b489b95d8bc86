package e2e

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// sdkScript exercises the Python SDK against the real server the way a
// user would; every check raises AssertionError with a message.
const sdkScript = `
import os, time
from declaw import Sandbox, CommandExitException, NotFoundException, InvalidArgumentException

def check(cond, msg):
    if not cond:
        raise AssertionError(msg)

sbx = Sandbox.create(template="python", timeout=120, metadata={"suite": "sdk-e2e"}, envs={"GREETING": "hi"})
try:
    check(sbx.sandbox_id.startswith("sbx-"), "sandbox id %r" % sbx.sandbox_id)
    check(sbx.is_running(), "is_running false")
    info = sbx.get_info()
    check(info.sandbox_id == sbx.sandbox_id and info.metadata.get("suite") == "sdk-e2e", "get_info %r" % (info,))

    r = sbx.commands.run("echo $GREETING; echo oops >&2; exit 2")
    check(r.stdout == "hi\n" and r.stderr == "oops\n" and r.exit_code == 2, "run %r" % (r,))
    r = sbx.commands.run("whoami; pwd", user="user", cwd="/tmp")
    check(r.stdout == "user\n/tmp\n", "user/cwd %r" % (r.stdout,))
    r = sbx.commands.run("echo $X", envs={"X": "y"})
    check(r.stdout == "y\n", "envs %r" % (r.stdout,))

    chunks = []
    r = sbx.commands.run("for i in 1 2 3; do echo line$i; sleep 0.1; done", on_stdout=lambda d: chunks.append(d))
    check("".join(chunks).count("line") == 3 and r.exit_code == 0, "on_stdout %r %r" % (chunks, r))

    h = sbx.commands.run("read x; echo got $x; exit 5", background=True, stdin=True)
    check(h.pid > 0, "pid")
    check(any(p.pid == h.pid for p in sbx.commands.list()), "pid not listed")
    sbx.commands.send_stdin(h.pid, "ping\n")
    try:
        h.wait()
        raise AssertionError("wait did not raise on exit code 5")
    except CommandExitException as e:
        check(e.exit_code == 5 and "got ping" in e.stdout, "CommandExitException %r" % (e,))
    h2 = sbx.commands.run("sleep 600", background=True)
    check(h2.kill() is True, "kill background")

    sbx.files.write("/tmp/sdk/hello.txt", "hello world")
    check(sbx.files.read("/tmp/sdk/hello.txt") == "hello world", "read text")
    blob = bytes(range(256)) * 1000
    sbx.files.write("/tmp/sdk/blob.bin", blob)
    check(sbx.files.read("/tmp/sdk/blob.bin", format="bytes") == blob, "bytes round trip")
    check(sbx.files.exists("/tmp/sdk/hello.txt") and not sbx.files.exists("/tmp/sdk/nope"), "exists")
    names = sorted(e.name for e in sbx.files.list("/tmp/sdk"))
    check(names == ["blob.bin", "hello.txt"], "list %r" % names)
    check(sbx.files.get_info("/tmp/sdk/blob.bin").size == len(blob), "get_info size")
    sbx.files.rename("/tmp/sdk/hello.txt", "/tmp/sdk/hi.txt")
    check(sbx.files.make_dir("/tmp/sdk/d") is True and sbx.files.make_dir("/tmp/sdk/d") is False, "make_dir")
    sbx.files.remove("/tmp/sdk/hi.txt")
    check(not sbx.files.exists("/tmp/sdk/hi.txt"), "remove")
    try:
        sbx.files.read("/tmp/sdk/missing")
        raise AssertionError("reading a missing file did not raise")
    except NotFoundException:
        pass

    same = Sandbox.connect(sbx.sandbox_id)
    check(same.commands.run("cat /tmp/sdk/blob.bin | wc -c").stdout.strip() == str(len(blob)), "connect")
    listed = Sandbox.list(query={"metadata": {"suite": "sdk-e2e"}})
    ids = [s.sandbox_id for s in listed.sandboxes]
    check(ids == [sbx.sandbox_id], "list by metadata %r" % ids)
    sbx.set_timeout(300)
    sbx.update_network(allow_internet_access=False)
    check(any(e.type == "network.updated" for e in sbx.audit.list(type="network")), "audit has no network.updated")
    check(any(e.type == "sandbox.created" for e in sbx.get_audit_log()), "audit has no sandbox.created")
    try:
        Sandbox.create(template="python", timeout=-1)
        raise AssertionError("negative timeout accepted")
    except InvalidArgumentException:
        pass
finally:
    sbx.kill()
check(not sbx.is_running(), "still running after kill")
with Sandbox.create(template="python") as s2:
    check(s2.commands.run("echo ctx").stdout == "ctx\n", "context manager")
    sid = s2.sandbox_id
check(not Sandbox.connect(sid).is_running(), "context manager did not kill")
print("SDK-E2E-OK")
`

func TestPythonSDK(t *testing.T) {
	s := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := s.pythonCmd(ctx, sdkScript)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil || !strings.Contains(out.String(), "SDK-E2E-OK") {
		t.Fatalf("SDK script failed: %v\n%s", err, out.String())
	}
}
