import asyncio
import base64
import threading
import time
import unittest
import uuid

from helpers import API_KEY, FakeServerTest, wait_until
from fake_server import Reply, sse_event

from declaw import (
    AsyncCommandHandle,
    AsyncSandbox,
    AsyncWatchHandle,
    CommandExitException,
    CommandResult,
    ConflictException,
    InvalidArgumentException,
    NotFoundException,
    PtySize,
    RateLimitException,
    SandboxException,
    SnapshotInfo,
    TimeoutException,
)

S = "/sandboxes/sbx-1"


def b64(x: bytes) -> str:
    return base64.b64encode(x).decode()


def stream_threads():
    return [t for t in threading.enumerate() if t.name.startswith(("declaw-stream", "declaw-async-call"))]


class AsyncTestBase(FakeServerTest):
    def arun(self, coro, timeout=15):
        return asyncio.run(asyncio.wait_for(coro, timeout))

    async def asandbox(self, sandbox_id="sbx-1") -> AsyncSandbox:
        self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": sandbox_id, "envd_access_token": "tok"}))
        sbx = await AsyncSandbox.create(**self.kw())
        self.fake.reset()
        return sbx


class AsyncLifecycleTest(AsyncTestBase):
    def test_create_wire_format_and_context_manager(self):
        async def main():
            self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": "sbx-1", "template_id": "python"}))
            self.fake.route("DELETE", S, Reply(202, json={"queued": True}))
            async with await AsyncSandbox.create(template="python", metadata={"a": "b"}, **self.kw()) as sbx:
                self.assertIsInstance(sbx, AsyncSandbox)
                self.assertEqual((sbx.sandbox_id, sbx.template_id), ("sbx-1", "python"))
                r = self.reqs[0]
                self.assertEqual(r.json, {"template": "python", "timeout": 300, "secure": True, "metadata": {"a": "b"}})
                self.assertEqual(r.headers["authorization"], f"Bearer {API_KEY}")
                uuid.UUID(r.headers["idempotency-key"], version=4)
            self.assertEqual((self.last().method, self.last().path, self.last().raw_query), ("DELETE", S, "async=true"))

        self.arun(main())

    def test_lifecycle_methods(self):
        async def main():
            sbx = await self.asandbox()
            f = self.fake
            f.route("GET", S, Reply(200, json={"sandbox_id": "sbx-1", "template_id": "base", "state": "running"}))
            f.route("PATCH", S + "/timeout", Reply(200, json={}))
            f.route("GET", S + "/status", Reply(200, json={"is_running": True}))
            f.route("GET", S + "/metrics", Reply(200, json=[{"timestamp": "2026-11-27T05:00:00Z",
                                                              "cpu_usage_percent": 1.5, "memory_usage_mb": 30}]))
            f.route("POST", S + "/pause", Reply(200, json={}))
            f.route("POST", S + "/resume", Reply(200, json={}))
            f.route("PUT", S + "/network", Reply(200, json={"sandbox_id": "sbx-1"}))
            f.route("GET", S + "/audit", Reply(200, json={"events": [{"id": 1, "type": "vm_created"}]}))
            f.route("DELETE", S, Reply(200, json={"killed": True}))

            info = await sbx.get_info()
            self.assertEqual(info.state, "running")
            self.assertEqual((await AsyncSandbox.get_info("sbx-1", **self.kw())).template_id, "base")
            await sbx.set_timeout(60)
            self.assertEqual(self.last().json, {"timeout": 60})
            await AsyncSandbox.set_timeout("sbx-1", 61, **self.kw())
            self.assertEqual(self.last().json, {"timeout": 61})
            self.assertTrue(await sbx.is_running())
            m = await sbx.get_metrics()
            self.assertEqual((m[0].cpu_usage_percent, m[0].memory_usage_mb), (1.5, 30))
            self.assertEqual(len(await AsyncSandbox.get_metrics("sbx-1", **self.kw())), 1)
            await sbx.pause()
            self.assertEqual((self.last().path, self.last().json), (S + "/pause", {}))
            await sbx.resume(timeout=30)
            self.assertEqual((self.last().path, self.last().json), (S + "/resume", {"timeout": 30}))
            resumed = await AsyncSandbox.resume("sbx-1", **self.kw())
            self.assertIsInstance(resumed, AsyncSandbox)
            await sbx.update_network(allow_out=["pypi.org"])
            self.assertEqual(self.last().json, {"allow_out": ["pypi.org"]})
            ev = await sbx.audit_events(limit=5)
            self.assertEqual((ev[0].type, self.last().raw_query), ("vm_created", "limit=5"))
            self.assertEqual([e.id async for e in sbx.audit], [1])
            self.assertTrue(await sbx.kill(wait=True))
            self.assertEqual(self.last().raw_query, "")
            f.route("DELETE", S, Reply(404, json={"message": "gone"}))
            self.assertFalse(await AsyncSandbox.kill("sbx-1", **self.kw()))
            self.assertFalse(await AsyncSandbox.kill_by_id("sbx-1", **self.kw()))

            f.route("GET", S, Reply(200, json={"sandbox_id": "sbx-1"}))
            c = await AsyncSandbox.connect("sbx-1", timeout=90, **self.kw())
            self.assertEqual((c.sandbox_id, self.last().json), ("sbx-1", {"timeout": 90}))

            f.route("POST", "/sandboxes/kill-many", Reply(200, json={"results": {"sbx-1": {"queued": True}}}))
            self.assertEqual(await AsyncSandbox.kill_many(["sbx-1"], **self.kw()), {"sbx-1": {"queued": True}})
            self.assertEqual((self.last().raw_query, self.last().json), ("async=true", {"sandbox_ids": ["sbx-1"]}))

            self.assertEqual(sbx.get_host(8080), f"http://{self.fake.domain}{S}/ports/8080")

        self.arun(main())

    def test_list_pages(self):
        async def main():
            pages = [Reply(200, json={"sandboxes": [{"sandbox_id": "sbx-1"}], "next_token": "t2"}),
                     Reply(200, json={"sandboxes": [{"sandbox_id": "sbx-2"}], "next_token": None})]
            self.fake.route("GET", "/sandboxes", pages)
            res = await AsyncSandbox.list(query={"state": ["running"]}, limit=1, **self.kw())
            self.assertEqual([s.sandbox_id for s in res], ["sbx-1"])
            self.assertTrue(res.has_next)
            self.assertEqual([s.sandbox_id async for s in res.iter_all()], ["sbx-1", "sbx-2"])
            self.assertEqual(self.last().query, {"state": ["running"], "limit": ["1"], "next_token": ["t2"]})

        self.arun(main())

    def test_snapshots_and_restore(self):
        async def main():
            sbx = await self.asandbox()
            snap = {"snapshot_id": "snap-1", "sandbox_id": "sbx-1", "source": "manual", "kind": "filesystem",
                    "created_at": "2026-11-27T05:00:00Z", "size_bytes": 10}
            self.fake.route("POST", S + "/snapshot", Reply(201, json=snap))
            info = await sbx.create_snapshot()
            self.assertIsInstance(info, SnapshotInfo)
            self.assertEqual((self.last().json, info.snapshot_id, info.size_bytes), ({}, "snap-1", 10))
            await sbx.snapshot()
            self.fake.route("POST", S + "/snapshot", Reply(409, json={"message": "no", "code": "not_supported"}))
            with self.assertRaises(ConflictException):
                await sbx.create_snapshot(memory=True)
            self.assertEqual(self.last().json, {"memory": True})
            self.fake.route("GET", S + "/snapshots", Reply(200, json={"snapshots": [snap]}))
            self.assertEqual([s.snapshot_id for s in await sbx.list_snapshots()], ["snap-1"])
            self.assertEqual(len(await AsyncSandbox.list_snapshots("sbx-1", **self.kw())), 1)
            self.fake.route("DELETE", S + "/snapshots/snap-1", Reply(200, json={"deleted": True}))
            self.assertTrue(await sbx.delete_snapshot("snap-1"))
            self.assertTrue(await AsyncSandbox.delete_snapshot("sbx-1", "snap-1", **self.kw()))
            self.fake.route("POST", S + "/restore", Reply(200, json={
                "sandbox_id": "sbx-1", "snapshot_id": "snap-1", "node_id": "n",
                "sandbox": {"sandbox_id": "sbx-1", "template_id": "base", "state": "running"}}))
            same = await AsyncSandbox.restore("sbx-1", snapshot_id="snap-1", **self.kw())
            self.assertIsInstance(same, AsyncSandbox)
            self.assertEqual((same.sandbox_id, same.restored_from, self.last().raw_query),
                             ("sbx-1", "snap-1", "snapshot_id=snap-1"))
            again = await sbx.restore()
            self.assertEqual((again.sandbox_id, self.last().raw_query), ("sbx-1", ""))
            self.fake.route("POST", S + "/restore",
                            Reply(201, json={"sandbox_id": "sbx-2", "snapshot_id": "snap-1", "node_id": "n",
                                             "sandbox": {"sandbox_id": "sbx-2"}}))
            fork = await AsyncSandbox.restore("sbx-1", "snap-1", fork=True, **self.kw())
            self.assertEqual((fork.sandbox_id, self.last().raw_query), ("sbx-2", "snapshot_id=snap-1&fork=true"))
            fork2 = await sbx.restore(fork=True)
            self.assertEqual((fork2.sandbox_id, self.last().raw_query), ("sbx-2", "fork=true"))

        self.arun(main())

    def test_error_mapping(self):
        async def main():
            sbx = await self.asandbox()
            self.fake.route("GET", S, Reply(404, json={"message": "no such sandbox", "code": "sandbox_not_found"}))
            with self.assertRaises(NotFoundException) as cm:
                await sbx.get_info()
            self.assertEqual((cm.exception.status, cm.exception.code), (404, "sandbox_not_found"))
            self.fake.route("POST", "/sandboxes", Reply(429, json={"message": "slow down"}, headers={"Retry-After": "7"}))
            with self.assertRaises(RateLimitException) as cm2:
                await AsyncSandbox.create(**self.kw())
            self.assertEqual(cm2.exception.retry_after, 7.0)
            self.fake.route("POST", S + "/commands", Reply(409, json={"message": "paused", "code": "sandbox_paused"}))
            with self.assertRaises(ConflictException):
                await sbx.commands.run("true")
            self.fake.route("POST", S + "/commands/stream", Reply(408, json={"message": "timed out"}))
            with self.assertRaises(TimeoutException):
                await sbx.commands.run("sleep 9", on_stdout=print)
            self.fake.route("POST", S + "/commands/stream",
                            Reply(200, sse=[sse_event("error", {"error": "command timed out", "code": "timeout"})]))
            with self.assertRaises(TimeoutException):
                await sbx.commands.run("sleep 9", on_stdout=print)
            with self.assertRaises(ValueError):
                await sbx.commands.run("")  # refused before sending
            self.fake.route("GET", S + "/files/list", Reply(400, json={"message": "bad depth"}))
            with self.assertRaises(InvalidArgumentException):
                await sbx.files.list("/")
            self.fake.route("GET", S + "/files", Reply(500, json={"message": "boom"}))
            with self.assertRaises(SandboxException) as cm3:
                await sbx.files.read("/x")
            self.assertEqual(cm3.exception.status, 500)
            self.assertEqual(len([r for r in self.reqs if r.path == S + "/files"]), 3)  # GET retried like sync

        self.arun(main())


class AsyncCommandsTest(AsyncTestBase):
    def test_run_foreground_background_and_flat(self):
        async def main():
            sbx = await self.asandbox()
            self.fake.route("POST", S + "/commands",
                            Reply(200, json={"pid": 5, "stdout": "hi\n", "stderr": "", "exit_code": 3}))
            r = await sbx.commands.run("echo hi", envs={"A": "1"}, cwd="/tmp", timeout=10)
            self.assertEqual((r.stdout, r.exit_code, r.pid), ("hi\n", 3, 5))  # no raise on exit != 0
            self.assertEqual(self.last().json, {"cmd": "echo hi", "background": False, "timeout": 10,
                                                "envs": {"A": "1"}, "cwd": "/tmp"})
            r2 = await sbx.run_command("echo hi")
            self.assertEqual((r2.stdout, self.last().json["cmd"]), ("hi\n", "echo hi"))

            self.fake.route("POST", S + "/commands", Reply(200, json={"pid": 9}))
            h = await sbx.commands.run("sleep 1", background=True, stdin=True, tag="t")
            self.assertIsInstance(h, AsyncCommandHandle)
            self.assertEqual(self.last().json, {"cmd": "sleep 1", "background": True, "timeout": 60, "stdin": True,
                                                "tag": "t"})
            self.fake.route("POST", S + "/commands/9/stdin", Reply(200, json={}))
            await h.send_stdin("x")
            self.assertEqual(self.last().json, {"data": "x"})
            await sbx.send_command_stdin(9, b"y")
            self.assertEqual(self.last().json, {"data": "y"})
            self.fake.route("GET", S + "/commands/9/wait",
                            Reply(200, json={"pid": 9, "stdout": "out", "stderr": "err", "exit_code": 2}))
            got = []

            async def on_out(s):
                await asyncio.sleep(0)
                got.append(("out", s))

            with self.assertRaises(CommandExitException) as cm:
                await h.wait(on_stdout=on_out, on_stderr=lambda s: got.append(("err", s)))
            self.assertEqual((cm.exception.exit_code, got), (2, [("out", "out"), ("err", "err")]))

            self.fake.route("GET", S + "/commands",
                            Reply(200, json=[{"pid": 9, "cmd": "sleep 1", "is_pty": False, "envs": {}}]))
            self.assertEqual([p.pid for p in await sbx.list_commands()], [9])
            c = await sbx.connect_command(9)
            self.assertEqual(c.pid, 9)
            with self.assertRaises(NotFoundException):
                await sbx.commands.connect(10)
            self.fake.route("DELETE", S + "/commands/9", Reply(200, json={"killed": True}))
            self.assertTrue(await sbx.kill_command(9))
            self.assertTrue(await c.kill())
            self.fake.route("DELETE", S + "/commands/9", Reply(404, json={"message": "gone"}))
            self.assertFalse(await sbx.commands.kill(9))

        self.arun(main())

    def test_stream_with_sync_and_async_callbacks(self):
        async def main():
            sbx = await self.asandbox()
            events = [sse_event("start", {"type": "start", "pid": 7}),
                      sse_event("stdout", {"type": "stdout", "data": "a\n"}),
                      sse_event("stderr", {"type": "stderr", "data": "e"}),
                      sse_event("stdout", {"type": "stdout", "data": "b\u00e9\n"}),
                      sse_event("exit", {"type": "exit", "exit_code": 1})]
            raw = b"".join(events)
            chunks = [raw[i:i + 5] for i in range(0, len(raw), 5)]
            self.fake.route("POST", S + "/commands/stream", Reply(200, sse=chunks))
            out, err = [], []

            async def on_out(c):
                await asyncio.sleep(0)
                out.append(c)

            r = await sbx.commands.run("x", on_stdout=on_out, on_stderr=err.append)
            self.assertIsInstance(r, CommandResult)
            self.assertEqual((r.stdout, r.stderr, r.exit_code, r.pid), ("a\nb\u00e9\n", "e", 1, 7))
            self.assertEqual((out, err), (["a\n", "b\u00e9\n"], ["e"]))
            req = self.last()
            self.assertEqual(req.json, {"cmd": "x", "background": False, "timeout": 60, "stream": True})
            self.assertEqual(req.headers["accept"], "text/event-stream")
            r2 = await sbx.commands.run_stream("x")
            self.assertEqual(r2.stdout, "a\nb\u00e9\n")

        self.arun(main())

    def test_event_loop_not_blocked_by_stream(self):
        async def main():
            sbx = await self.asandbox()
            events = [sse_event("stdout", {"type": "stdout", "data": str(i)}) for i in range(5)]
            events.append(sse_event("exit", {"exit_code": 0}))
            self.fake.route("POST", S + "/commands/stream", Reply(200, sse=events, chunk_delay=0.05))
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.01)

            t = asyncio.ensure_future(ticker())
            r = await sbx.commands.run("x", on_stdout=lambda c: None)
            t.cancel()
            self.assertEqual(r.stdout, "01234")
            self.assertGreater(ticks, 10)

        self.arun(main())

    def test_callback_error_closes_stream(self):
        async def main():
            sbx = await self.asandbox()
            hold = threading.Event()
            self.fake.route("POST", S + "/commands/stream",
                            Reply(200, sse=[sse_event("stdout", {"type": "stdout", "data": "x"})], hold=hold))

            async def bad(_):
                raise ValueError("callback failed")

            with self.assertRaises(ValueError):
                await sbx.commands.run("x", on_stdout=bad)
            self.assertTrue(wait_until(lambda: self.fake.disconnects == [S + "/commands/stream"]))
            hold.set()

        self.arun(main())


class AsyncCancellationTest(AsyncTestBase):
    def test_cancel_closes_command_stream(self):
        async def main():
            sbx = await self.asandbox()
            hold = threading.Event()
            self.fake.route("POST", S + "/commands/stream",
                            Reply(200, sse=[sse_event("stdout", {"type": "stdout", "data": "first"})], hold=hold))
            got = asyncio.Event()
            task = asyncio.ensure_future(sbx.commands.run("tail -f x", on_stdout=lambda c: got.set()))
            await asyncio.wait_for(got.wait(), 5)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            ok = await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_until(lambda: self.fake.disconnects == [S + "/commands/stream"]))
            self.assertTrue(ok, self.fake.disconnects)
            hold.set()

        self.arun(main())
        self.assertTrue(wait_until(lambda: not stream_threads()), stream_threads())

    def test_cancel_aborts_blocking_call(self):
        async def main():
            sbx = await self.asandbox()
            self.fake.route("GET", S + "/commands/3/wait", Reply(200, json={"exit_code": 0}, delay=3))
            self.fake.route("POST", S + "/commands", Reply(200, json={"pid": 3}))
            h = await sbx.commands.run("sleep 100", background=True)
            task = asyncio.ensure_future(h.wait())
            await asyncio.sleep(0.2)
            started = time.monotonic()
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            self.assertLess(time.monotonic() - started, 1)

        self.arun(main())
        # the worker thread's socket was shut down: it ends long before the 3 s reply
        self.assertTrue(wait_until(lambda: not stream_threads(), timeout=1.5), stream_threads())

    def test_cancel_closes_pty_stream(self):
        async def main():
            sbx = await self.asandbox()
            hold = threading.Event()
            self.fake.route("POST", S + "/pty", Reply(200, json={"pid": 4}))
            self.fake.route("GET", S + "/pty/4/stream",
                            Reply(200, sse=[sse_event("data", {"data": b64(b"$ ")})], hold=hold))
            h = await sbx.pty.create(PtySize(100, 30))
            got = []
            task = asyncio.ensure_future(h.wait(on_data=got.append))
            await asyncio.sleep(0.3)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            self.assertEqual(got, [b"$ "])
            ok = await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_until(lambda: self.fake.disconnects == [S + "/pty/4/stream"]))
            self.assertTrue(ok, self.fake.disconnects)
            hold.set()

        self.arun(main())


    def test_abandoned_stream_closed_when_dropped(self):
        async def main():
            import gc

            sbx = await self.asandbox()
            hold = threading.Event()
            self.fake.route("POST", S + "/pty", Reply(200, json={"pid": 4}))
            self.fake.route("GET", S + "/pty/4/stream",
                            Reply(200, sse=[sse_event("data", {"data": b64(b"$ ")})], hold=hold))
            h = await sbx.pty.create()
            async for chunk in h:
                self.assertEqual(chunk, b"$ ")
                break  # no aclose / disconnect
            await asyncio.sleep(0.1)
            self.assertEqual(self.fake.disconnects, [])
            del h, chunk
            gc.collect()
            ok = await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_until(lambda: self.fake.disconnects == [S + "/pty/4/stream"]))
            self.assertTrue(ok, self.fake.disconnects)
            hold.set()

        self.arun(main())

    def test_disconnect_closes_stream(self):
        async def main():
            sbx = await self.asandbox()
            hold = threading.Event()
            self.fake.route("POST", S + "/stdio", Reply(200, json={"cmd_id": "c-1"}))
            self.fake.route("GET", S + "/stdio/c-1/stream",
                            Reply(200, sse=[sse_event("stdout", {"data": b64(b"x"), "entry_id": 1})], hold=hold))
            h = await sbx.stdio.start("cat")
            async for kind, data in h:
                self.assertEqual((kind, data), ("stdout", b"x"))
                break
            await h.disconnect()
            ok = await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_until(lambda: self.fake.disconnects == [S + "/stdio/c-1/stream"]))
            self.assertTrue(ok, self.fake.disconnects)
            hold.set()

        self.arun(main())


class AsyncFilesTest(AsyncTestBase):
    def test_files(self):
        async def main():
            sbx = await self.asandbox()
            f = self.fake
            f.route("GET", S + "/files", Reply(200, body="h\u00e9".encode()))
            self.assertEqual(await sbx.files.read("/a b"), "h\u00e9")
            self.assertEqual(self.last().raw_query, "path=%2Fa%20b".replace("%2F", "/"))
            self.assertEqual(await sbx.read_file("/a b", user="user"), "h\u00e9")
            self.assertEqual(self.last().query, {"path": ["/a b"], "username": ["user"]})
            f.route("GET", S + "/files/raw", Reply(200, body=b"\x00\x01" * 100000))
            self.assertEqual(await sbx.files.read("/b", format="bytes"), b"\x00\x01" * 100000)
            chunks = [c async for c in await sbx.read_file("/b", format="stream")]
            self.assertEqual(b"".join(chunks), b"\x00\x01" * 100000)
            f.route("GET", S + "/files/raw", Reply(404, json={"message": "no file", "code": "file_not_found"}))
            with self.assertRaises(NotFoundException):
                await sbx.files.read("/nope", format="stream")  # raised by the call, not the iteration

            f.route("POST", S + "/files", Reply(200, json={"path": "/t", "size": 2}))
            w = await sbx.files.write("/t", "hi")
            self.assertEqual((w.path, w.size, self.last().json), ("/t", 2, {"path": "/t", "data": "hi"}))
            f.route("PUT", S + "/files/raw", Reply(200, json={"path": "/b", "size": 3}))
            await sbx.write_file("/b", b"\x00\x01\x02")
            self.assertEqual((self.last().body, self.last().headers["content-type"]),
                             (b"\x00\x01\x02", "application/octet-stream"))
            f.route("POST", S + "/files/batch", Reply(200, json=[{"path": "/x", "size": 1}]))
            res = await sbx.write_files([{"path": "/x", "data": "1"}])
            self.assertEqual((res[0].path, self.last().json), ("/x", {"files": [{"path": "/x", "data": "1"}]}))
            f.route("GET", S + "/files/list", Reply(200, json=[{"name": "a", "path": "/a", "type": "dir", "size": 0}]))
            self.assertTrue((await sbx.list_files("/", depth=2))[0].is_dir)
            self.assertEqual(self.last().query, {"path": ["/"], "depth": ["2"]})
            f.route("GET", S + "/files/exists", Reply(200, json={"exists": True}))
            self.assertTrue(await sbx.file_exists("/a"))
            f.route("GET", S + "/files/info", Reply(200, json={"name": "a", "path": "/a", "type": "file", "size": 3}))
            self.assertEqual((await sbx.get_file_info("/a")).size, 3)
            f.route("DELETE", S + "/files", Reply(200, json={}))
            await sbx.remove_file("/a")
            self.assertEqual((self.last().method, self.last().query), ("DELETE", {"path": ["/a"]}))
            f.route("PATCH", S + "/files", Reply(200, json={"name": "b", "path": "/b", "type": "file", "size": 0}))
            self.assertEqual((await sbx.rename_file("/a", "/b")).path, "/b")
            self.assertEqual(self.last().json, {"old_path": "/a", "new_path": "/b"})
            f.route("POST", S + "/files/mkdir", Reply(200, json={"created": False}))
            self.assertFalse(await sbx.make_dir("/d"))
            self.assertEqual(self.last().json, {"path": "/d"})

        self.arun(main())

    def test_watch_dir_iteration_and_stop(self):
        W = S + "/files/watch"
        TS = "2026-11-27T05:00:01Z"

        def ev(i, t, name):
            return sse_event(t, {"type": t, "path": "/p/" + name, "name": name, "timestamp": TS, "event_id": i},
                             id=str(i))

        async def main():
            sbx = await self.asandbox()
            hold = threading.Event()
            raw = (sse_event("start", {"type": "start", "watcher_id": "w-9", "path": "/p", "timestamp": TS})
                   + ev(1, "create", "a") + ev(2, "write", "a") + ev(3, "remove", "a"))
            self.fake.route("POST", W, Reply(200, json={"watcher_id": "w-9"}))
            self.fake.route("GET", W + "/w-9/stream", Reply(200, sse=[raw[i:i + 3] for i in range(0, len(raw), 3)],
                                                            hold=hold))
            self.fake.route("DELETE", W + "/w-9", Reply(204))
            async with await sbx.files.watch_dir("/p", recursive=True) as h:
                self.assertIsInstance(h, AsyncWatchHandle)
                self.assertEqual(self.reqs[0].json, {"path": "/p", "recursive": True})
                got = []
                async for e in h:
                    got.append((e.event_id, e.type, e.name))
                    if len(got) == 3:
                        break
                self.assertEqual(got, [(1, "create", "a"), (2, "write", "a"), (3, "remove", "a")])
                self.assertEqual(await h.get_new_events(), [])
                self.assertTrue(h.is_running)
            self.assertFalse(h.is_running)
            self.assertEqual([r.path for r in self.reqs if r.method == "DELETE"], [W + "/w-9"])
            ok = await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_until(lambda: self.fake.disconnects == [W + "/w-9/stream"]))
            self.assertTrue(ok)
            hold.set()

            # on_event may be a coroutine function; flat method
            self.fake.route("GET", W + "/w-9/stream", Reply(200, sse=[ev(1, "create", "z")]))
            seen = asyncio.Event()
            names = []

            async def on_event(e):
                names.append(e.name)
                seen.set()

            h2 = await sbx.watch_dir("/p", on_event=on_event)
            await asyncio.wait_for(seen.wait(), 5)
            self.assertEqual(names, ["z"])
            await h2.stop()
            await h2.stop()

            self.fake.route("GET", W + "/w-9/stream", Reply(404, json={"message": "gone", "code": "watcher_not_found"}))
            h3 = await sbx.files.watch_dir("/p")
            with self.assertRaises(NotFoundException):
                async for _ in h3:
                    pass
            self.fake.route("POST", W, Reply(409, json={"message": "too many", "code": "watch_limit"}))
            with self.assertRaises(ConflictException):
                await sbx.files.watch_dir("/p")

        self.arun(main())


class AsyncPtyStdioTest(AsyncTestBase):
    def test_pty(self):
        async def main():
            sbx = await self.asandbox()
            self.fake.route("POST", S + "/pty", Reply(200, json={"pid": 33}))
            out = [sse_event("data", {"data": b64(b"$ ")}), sse_event("data", {"data": b64(b"hi\r\n")}),
                   sse_event("exit", {"exit_code": 0})]
            self.fake.route("GET", S + "/pty/33/stream", Reply(200, sse=out))
            h = await sbx.pty.create(size=PtySize(cols=100, rows=30), cwd="/tmp")
            self.assertEqual(h.pid, 33)
            create = [r for r in self.reqs if r.method == "POST"][0]
            self.assertEqual(create.json, {"size": {"cols": 100, "rows": 30}, "cwd": "/tmp", "timeout": 3600})
            self.fake.route("POST", S + "/pty/33/stdin", Reply(200, json={}))
            await h.send_stdin("ls\n")
            self.assertEqual(self.last().json, {"data": "ls\n"})
            self.fake.route("PATCH", S + "/pty/33", Reply(200, json={}))
            await h.resize(PtySize(120, 40))
            self.assertEqual(self.last().json, {"size": {"cols": 120, "rows": 40}})
            got = []

            async def on_data(b):
                got.append(b)

            self.assertEqual(await h.wait(on_data=on_data), 0)
            self.assertEqual(b"".join(got), b"$ hi\r\n")
            self.fake.route("DELETE", S + "/pty/33", Reply(200, json={"killed": True}))
            self.assertTrue(await h.kill())
            h2 = await sbx.pty.connect(33)
            self.assertEqual(b"".join([c async for c in h2]), b"$ hi\r\n")
            self.fake.route("POST", S + "/pty", Reply(429, json={"message": "too many"}))
            with self.assertRaises(RateLimitException):
                await sbx.pty.create()

        self.arun(main())

    def test_stdio_resume(self):
        async def main():
            sbx = await self.asandbox()
            self.fake.route("POST", S + "/stdio", Reply(200, json={"cmd_id": "c-1"}))
            h = await sbx.stdio.start("cat", envs={"A": "1"})
            self.assertEqual(self.last().json, {"cmd": "cat", "envs": {"A": "1"}})
            self.fake.route("POST", S + "/stdio/c-1/stdin", Reply(200, json={}))
            await h.send_stdin(b"\x00hi")
            self.assertEqual(self.last().json, {"data": b64(b"\x00hi")})
            self.fake.route("POST", S + "/stdio/c-1/stdin/close", Reply(200, json={}))
            await h.close_stdin()
            first = Reply(200, sse=[sse_event("stdout", {"data": b64(b"one "), "entry_id": 1}),
                                    sse_event("stderr", {"data": b64(b"err"), "entry_id": 2})], truncate=True)
            second = Reply(200, sse=[sse_event("stdout", {"data": b64(b"two"), "entry_id": 3}),
                                     sse_event("exit", {"exit_code": 4})])
            self.fake.route("GET", S + "/stdio/c-1/stream", [first, second])
            out, err = [], []

            async def on_out(b):
                out.append(b)

            self.assertEqual(await h.wait(on_stdout=on_out, on_stderr=err.append), 4)
            self.assertEqual((b"".join(out), b"".join(err), h.exit_code), (b"one two", b"err", 4))
            streams = [r for r in self.reqs if r.path.endswith("/stream")]
            self.assertEqual([r.query for r in streams], [{}, {"last_entry_id": ["2"]}])
            self.fake.route("DELETE", S + "/stdio/c-1", Reply(404, json={"message": "gone"}))
            self.assertFalse(await h.kill())
            h2 = sbx.stdio.connect("c-2")
            self.fake.route("GET", S + "/stdio/c-2/stream",
                            Reply(200, sse=[sse_event("stdout", {"data": b64(b"x"), "entry_id": 1}),
                                            sse_event("exit", {"exit_code": 0})]))
            self.assertEqual([p async for p in h2], [("stdout", b"x")])

        self.arun(main())


if __name__ == "__main__":
    unittest.main()
