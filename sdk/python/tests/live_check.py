"""Live check of the 0.2.0 features against a real Declaw server.

    DECLAW_API_KEY=... DECLAW_DOMAIN=127.0.0.1:8080 PYTHONPATH=sdk/python python3 sdk/python/tests/live_check.py

Needs the "python" template. Covers watch_dir (sync and async), metrics,
pause/resume, snapshots (memory refused), restore in place and as a fork, and
AsyncSandbox (streams with async callbacks, gather, stream reads,
cancellation, PTY, stdio). Prints SDK-NEW-E2E-OK on success; not collected
by unittest (it is no test_*.py).
"""
import asyncio, time
from declaw import (Sandbox, AsyncSandbox, ConflictException, NotFoundException, FilesystemEventType, PtySize,
                    CommandExitException)

def check(cond, msg):
    if not cond:
        raise AssertionError(msg)

# ---------------- sync: watch, metrics, pause/resume, snapshots, restore
sbx = Sandbox.create(template="python", timeout=300)
restored = None
try:
    sbx.files.make_dir("/tmp/w")
    with sbx.files.watch_dir("/tmp/w", recursive=True) as h:
        sbx.commands.run("echo a > /tmp/w/a.txt; mkdir /tmp/w/sub; echo b > /tmp/w/sub/b.txt; chmod 600 /tmp/w/a.txt; mv /tmp/w/a.txt /tmp/w/c.txt; rm /tmp/w/c.txt")
        seen = []
        deadline = time.time() + 10
        while time.time() < deadline:
            seen += h.get_new_events()
            if any(e.type == "remove" and e.name == "c.txt" for e in seen):
                break
            time.sleep(0.1)
        kinds = [(str(e.type), e.name) for e in seen]
        print("sync watch events:", kinds)
        for want in [("create", "a.txt"), ("write", "a.txt"), ("create", "sub"), ("create", "sub/b.txt"),
                     ("chmod", "a.txt"), ("rename", "a.txt"), ("create", "c.txt"), ("remove", "c.txt")]:
            check(want in kinds, "missing %r in %r" % (want, kinds))
        check(any(e.is_dir and e.name == "sub" for e in seen), "sub is_dir")
        check(all(e.timestamp is not None and e.event_id for e in seen), "timestamps/event ids")
    check(not h.is_running, "watch still running after stop")

    got = []
    h2 = sbx.files.watch_dir("/tmp/w", on_event=got.append)
    sbx.files.write("/tmp/w/x", "1")
    deadline = time.time() + 10
    while time.time() < deadline and not any(e.name == "x" for e in got):
        time.sleep(0.05)
    check(any(e.type == FilesystemEventType.CREATE and e.name == "x" for e in got), "on_event %r" % got)
    h2.stop()
    try:
        sbx.files.watch_dir("/tmp/does-not-exist")
        raise AssertionError("watching a missing dir did not raise")
    except NotFoundException:
        pass

    m = sbx.get_metrics()
    check(len(m) >= 1 and m[-1].timestamp is not None and m[-1].cpu_usage_percent is not None
          and m[-1].memory_usage_mb, "metrics %r" % m)
    print("metrics:", m[-1])

    bg = sbx.commands.run("i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done", background=True)
    time.sleep(0.5)
    sbx.pause()
    check(not sbx.is_running(), "running while paused")
    sbx.pause()  # no-op
    before = sbx.get_info().state
    Sandbox.resume(sbx.sandbox_id)
    check(sbx.is_running(), "not running after resume")
    print("state while paused:", before)
    bg.kill()

    sbx.files.write("/tmp/snapfile", "snapshot me")
    snap = sbx.create_snapshot()
    print("snapshot:", snap)
    check(snap.snapshot_id.startswith("snap-") and snap.sandbox_id == sbx.sandbox_id and snap.source == "manual"
          and snap.kind == "filesystem" and snap.created_at is not None, "snapshot %r" % snap)
    try:
        sbx.create_snapshot(memory=True)
        raise AssertionError("memory snapshot accepted")
    except ConflictException as e:
        check(e.code == "not_supported", "memory snapshot code %r" % e.code)
    snaps = sbx.list_snapshots()
    check(snaps and snaps[0].snapshot_id == snap.snapshot_id, "list_snapshots %r" % snaps)
    sbx.files.write("/tmp/snapfile", "changed")
    sbx.files.write("/tmp/later", "later")
    same = Sandbox.restore(sbx.sandbox_id, snapshot_id=snap.snapshot_id)
    check(same.sandbox_id == sbx.sandbox_id and same.restored_from == snap.snapshot_id, "restore %r" % same)
    check(same.files.read("/tmp/snapfile") == "snapshot me", "restored file")
    check(not same.files.exists("/tmp/later"), "file written after the snapshot survived")
    restored = Sandbox.restore(sbx.sandbox_id, snap.snapshot_id, fork=True)
    check(restored.sandbox_id != sbx.sandbox_id and restored.files.read("/tmp/snapfile") == "snapshot me", "fork")
    check(sbx.delete_snapshot(snap.snapshot_id) is True, "delete")
    check(sbx.delete_snapshot(snap.snapshot_id) is False, "delete idempotent")
    check(all(s.snapshot_id != snap.snapshot_id for s in Sandbox.list_snapshots(sbx.sandbox_id)), "still listed")
finally:
    sbx.kill()
    if restored is not None:
        restored.kill()
print("SYNC-OK")

# ---------------- async
async def main():
    async with await AsyncSandbox.create(template="python", timeout=300) as s:
        r = await s.run_command("echo hi")
        check(r.stdout == "hi\n", "run %r" % r)
        chunks = []
        async def on_out(c):
            chunks.append(c)
        r = await s.commands.run("for i in 1 2 3; do echo l$i; sleep 0.1; done", on_stdout=on_out)
        check("".join(chunks) == "l1\nl2\nl3\n" and r.exit_code == 0, "stream %r" % chunks)

        # several calls at once
        results = await asyncio.gather(*[s.commands.run("echo %d" % i) for i in range(8)])
        check([x.stdout for x in results] == ["%d\n" % i for i in range(8)], "gather")

        await s.write_file("/tmp/a/b.txt", "x")
        check(await s.read_file("/tmp/a/b.txt") == "x" and await s.file_exists("/tmp/a/b.txt"), "files")
        data = bytes(range(256)) * 4000
        await s.files.write("/tmp/a/blob", data)
        parts = [c async for c in await s.files.read("/tmp/a/blob", format="stream")]
        check(b"".join(parts) == data, "stream read")
        check([e.name for e in await s.list_files("/tmp/a")] == ["b.txt", "blob"] or
              sorted(e.name for e in await s.list_files("/tmp/a")) == ["b.txt", "blob"], "list")

        # cancelling a streaming command closes the stream
        got = asyncio.Event()
        task = asyncio.ensure_future(s.commands.run("while true; do echo tick; sleep 0.1; done", on_stdout=lambda c: got.set(), timeout=0))
        await asyncio.wait_for(got.wait(), 10)
        task.cancel()
        try:
            await task
            raise AssertionError("not cancelled")
        except asyncio.CancelledError:
            pass

        # watch
        async with await s.files.watch_dir("/tmp/a") as w:
            await s.write_file("/tmp/a/new.txt", "n")
            ev = None
            async def first():
                async for e in w:
                    if e.name == "new.txt":
                        return e
            ev = await asyncio.wait_for(first(), 10)
            check(ev.type == "create" or ev.type == "write", "async watch %r" % ev)

        # pty
        out = []
        p = await s.pty.create(PtySize(100, 30))
        await p.send_stdin("stty size; exit 3\n")
        code = await asyncio.wait_for(p.wait(on_data=out.append), 15)
        text = b"".join(out).decode(errors="replace")
        check(code == 3 and "30 100" in text, "pty %r %r" % (code, text))

        # stdio
        st = await s.stdio.start("cat")
        await st.send_stdin(b"hello\n")
        await st.close_stdin()
        acc = []
        check(await asyncio.wait_for(st.wait(on_stdout=acc.append), 15) == 0 and b"".join(acc) == b"hello\n", "stdio %r" % acc)

        h = await s.commands.run("exit 4", background=True)
        try:
            await h.wait()
            raise AssertionError("no CommandExitException")
        except CommandExitException as e:
            check(e.exit_code == 4, "exit code")

        snap = await s.create_snapshot()
        await s.write_file("/tmp/a/b.txt", "y")
        new = await AsyncSandbox.restore(s.sandbox_id, snap.snapshot_id)
        check(new.sandbox_id == s.sandbox_id and await new.read_file("/tmp/a/b.txt") == "x", "async restore")
        await s.delete_snapshot(snap.snapshot_id)
        m = await s.get_metrics()
        check(len(m) >= 1, "async metrics")
        await s.pause()
        await s.resume()
        check(await s.is_running(), "async resume")
        try:
            await AsyncSandbox.connect("sbx-000000000000")
            raise AssertionError("connect to a missing sandbox")
        except NotFoundException:
            pass
        sid = s.sandbox_id
    check(not await (await AsyncSandbox.connect(sid)).is_running(), "async context manager did not kill")

asyncio.run(main())
print("ASYNC-OK")
print("SDK-NEW-E2E-OK")
