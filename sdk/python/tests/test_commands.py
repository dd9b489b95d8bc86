import unittest

from helpers import FakeServerTest
from fake_server import Reply, sse_event

from declaw import (
    CommandExitException,
    CommandHandle,
    CommandResult,
    ConnectionConfig,
    NotFoundException,
    ProcessInfo,
    SandboxException,
    TimeoutException,
)
from declaw.commands import COMMAND_TIMEOUT_MARGIN


def split_every(data: bytes, n: int):
    return [data[i:i + n] for i in range(0, len(data), n)]


class RunTest(FakeServerTest):
    def test_foreground_defaults(self):
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/commands",
                        Reply(200, json={"pid": 42, "stdout": "hi\n", "stderr": "warn\n", "exit_code": 3}))
        res = sbx.commands.run("echo hi; exit 3")
        self.assertIsInstance(res, CommandResult)
        self.assertEqual((res.stdout, res.stderr, res.exit_code, res.pid, res.error), ("hi\n", "warn\n", 3, 42, None))
        r = self.last()
        self.assertEqual((r.method, r.path), ("POST", "/sandboxes/sbx-1/commands"))
        # root by default: no user, no cwd are sent
        self.assertEqual(r.json, {"cmd": "echo hi; exit 3", "background": False, "timeout": 60})

    def test_foreground_options(self):
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/commands", Reply(200, json={"stdout": "", "stderr": "", "exit_code": 0}))
        sbx.commands.run("ls", envs={"A": "1"}, user="user", cwd="/tmp", timeout=0)
        self.assertEqual(self.last().json, {"cmd": "ls", "background": False, "timeout": 0, "envs": {"A": "1"},
                                            "user": "user", "cwd": "/tmp"})
        sbx.commands.run("ls", timeout=2.5)
        self.assertEqual(self.last().json["timeout"], 2.5)

    def test_foreground_not_retried_on_5xx(self):
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/commands", Reply(502, json={"message": "envd down"}))
        with self.assertRaises(SandboxException) as cm:
            sbx.commands.run("touch /x")
        self.assertEqual(cm.exception.status, 502)
        self.assertEqual(len(self.reqs), 1)

    def test_command_timeout_408(self):
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/commands", Reply(408, json={"message": "timed out", "code": "timeout"}))
        with self.assertRaises(TimeoutException):
            sbx.commands.run("sleep 100", timeout=1)

    def test_http_timeout_covers_command_timeout(self):
        sbx = self.sandbox()
        sbx._config.request_timeout = 0.3  # shorter than the command takes
        self.fake.route("POST", "/sandboxes/sbx-1/commands",
                        Reply(200, json={"stdout": "ok", "stderr": "", "exit_code": 0}, delay=0.8))
        self.assertEqual(sbx.commands.run("sleep 0.8", timeout=5).stdout, "ok")
        c = sbx.commands
        self.assertEqual(c._http_timeout(60, None), 60 + COMMAND_TIMEOUT_MARGIN)
        self.assertEqual(c._http_timeout(60, 500), 500)
        self.assertIsNone(c._http_timeout(0, None))
        # but a normal call still times out at the request timeout
        self.fake.route("GET", "/sandboxes/sbx-1/commands", Reply(200, json=[], delay=0.8))
        with self.assertRaises(TimeoutException):
            sbx.commands.list()

    def test_stream_with_callbacks_across_chunk_boundaries(self):
        sbx = self.sandbox()
        body = (
            b": keep-alive comment\n\n"
            + sse_event("start", {"type": "start", "pid": 7})
            + sse_event("stdout", {"type": "stdout", "stream": "stdout", "data": "h\u00e9llo \u2603\n"})
            + sse_event("stderr", {"type": "stderr", "stream": "stderr", "data": "oops\n"})
            + sse_event(None, {"stream": "stdout", "data": "line2\r\n"}).replace(b"\n", b"\r\n")
            + sse_event("stdout", {"type": "stdout", "data": "x"}).replace(b"\n", b"\r")
            + sse_event("exit", {"type": "exit", "exit_code": 5})
        )
        for size in (1, 2, 3, 7, len(body)):
            with self.subTest(chunk=size):
                self.fake.reset()
                self.fake.route("POST", "/sandboxes/sbx-1/commands/stream", Reply(200, sse=split_every(body, size)))
                out, err = [], []
                res = sbx.commands.run("prog", on_stdout=out.append, on_stderr=err.append, timeout=10)
                self.assertEqual(out, ["h\u00e9llo \u2603\n", "line2\r\n", "x"])
                self.assertEqual(err, ["oops\n"])
                self.assertEqual((res.stdout, res.stderr, res.exit_code, res.pid),
                                 ("h\u00e9llo \u2603\nline2\r\nx", "oops\n", 5, 7))
                r = self.last()
                self.assertEqual(r.path, "/sandboxes/sbx-1/commands/stream")
                self.assertEqual(r.json, {"cmd": "prog", "background": False, "timeout": 10, "stream": True})
                self.assertEqual(r.headers["accept"], "text/event-stream")

    def test_callbacks_called_as_chunks_arrive(self):
        sbx = self.sandbox()
        import time
        chunks = [sse_event("stdout", {"type": "stdout", "data": "a"}),
                  sse_event("stdout", {"type": "stdout", "data": "b"}),
                  sse_event("exit", {"type": "exit", "exit_code": 0})]
        self.fake.route("POST", "/sandboxes/sbx-1/commands/stream", Reply(200, sse=chunks, chunk_delay=0.3))
        stamps = []
        t0 = time.monotonic()
        sbx.commands.run_stream("x", on_stdout=lambda d: stamps.append(time.monotonic() - t0))
        self.assertEqual(len(stamps), 2)
        self.assertLess(stamps[0], 0.25)
        self.assertGreater(stamps[1], 0.25)

    def test_run_stream_error_events(self):
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/commands/stream",
                        Reply(200, sse=[sse_event("error", {"type": "error", "error": "command timed out", "code": "timeout"})]))
        with self.assertRaises(TimeoutException):
            sbx.commands.run_stream("sleep 9", timeout=1)
        self.fake.route("POST", "/sandboxes/sbx-1/commands/stream",
                        Reply(200, sse=[sse_event("error", {"type": "error", "error": "spawn failed"})]))
        with self.assertRaises(SandboxException) as cm:
            sbx.commands.run_stream("nope")
        self.assertIn("spawn failed", str(cm.exception))
        self.fake.route("POST", "/sandboxes/sbx-1/commands/stream",
                        Reply(200, sse=[sse_event("stdout", {"type": "stdout", "data": "a"})]))
        with self.assertRaises(SandboxException):
            sbx.commands.run_stream("cut short")
        self.fake.route("POST", "/sandboxes/sbx-1/commands/stream", Reply(409, json={"message": "paused"}))
        with self.assertRaises(SandboxException) as cm:
            sbx.commands.run_stream("x")
        self.assertEqual(cm.exception.status, 409)
        # a stream that drops mid-way
        self.fake.route("POST", "/sandboxes/sbx-1/commands/stream",
                        Reply(200, sse=[sse_event("stdout", {"type": "stdout", "data": "a"})], truncate=True))
        with self.assertRaises(SandboxException):
            sbx.commands.run_stream("x")

    def test_background_handle(self):
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/commands", Reply(200, json={"pid": 12}))
        h = sbx.commands.run("server", background=True, stdin=True)
        self.assertIsInstance(h, CommandHandle)
        self.assertEqual(h.pid, 12)
        self.assertEqual(self.last().json, {"cmd": "server", "background": True, "timeout": 60, "stdin": True})

        self.fake.route("POST", "/sandboxes/sbx-1/commands/12/stdin", Reply(200, json={}))
        h.send_stdin("input\n")
        self.assertEqual(self.last().json, {"data": "input\n"})
        sbx.commands.send_stdin(12, b"raw")
        self.assertEqual(self.last().json, {"data": "raw"})

        self.fake.route("DELETE", "/sandboxes/sbx-1/commands/12", Reply(200, json={"killed": True}))
        self.assertTrue(h.kill())
        self.assertEqual((self.last().method, self.last().path), ("DELETE", "/sandboxes/sbx-1/commands/12"))
        self.fake.route("DELETE", "/sandboxes/sbx-1/commands/12", Reply(404, json={"message": "no such pid"}))
        self.assertFalse(sbx.commands.kill(12))

    def test_wait_ok_and_failure(self):
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/commands", Reply(200, json={"pid": 12}))
        self.fake.route("GET", "/sandboxes/sbx-1/commands/12/wait",
                        Reply(200, json={"pid": 12, "stdout": "done\n", "stderr": "", "exit_code": 0}))
        got = []
        h = sbx.commands.run("job", background=True, on_stdout=got.append)
        res = h.wait()
        self.assertEqual((res.stdout, res.exit_code), ("done\n", 0))
        self.assertEqual(got, ["done\n"])
        self.assertEqual(self.last().method, "GET")

        self.fake.route("GET", "/sandboxes/sbx-1/commands/12/wait",
                        Reply(200, json={"pid": 12, "stdout": "o", "stderr": "bad thing\n", "exit_code": 2}))
        h2 = sbx.commands.run("job", background=True)
        with self.assertRaises(CommandExitException) as cm:
            h2.wait()
        e = cm.exception
        self.assertEqual((e.exit_code, e.stdout, e.stderr), (2, "o", "bad thing\n"))
        self.assertEqual(h2.exit_code, 2)

    def test_list_connect(self):
        sbx = self.sandbox()
        procs = [{"pid": 1, "cmd": "sleep 100", "is_pty": False, "envs": {"A": "b"}, "tag": "t"},
                 {"pid": 2, "cmd": "bash", "is_pty": True, "envs": {}}]
        self.fake.route("GET", "/sandboxes/sbx-1/commands", Reply(200, json=procs))
        got = sbx.commands.list()
        self.assertEqual(got[0], ProcessInfo(pid=1, cmd="sleep 100", is_pty=False, envs={"A": "b"}, tag="t"))
        self.assertTrue(got[1].is_pty)
        self.assertEqual(sbx.commands.connect(2).pid, 2)
        with self.assertRaises(NotFoundException):
            sbx.commands.connect(99)

    def test_bad_arguments(self):
        sbx = self.sandbox()
        with self.assertRaises(ValueError):
            sbx.commands.run("")
        with self.assertRaises(ValueError):
            sbx.commands.run("ls", timeout=-1)
        with self.assertRaises(TypeError):
            sbx.commands.run("cat", stdin="data")
        self.assertEqual(self.reqs, [])


class ConnectionTest(FakeServerTest):
    def test_keep_alive_reuses_one_connection(self):
        sbx = self.sandbox()
        self.fake.route("GET", "/sandboxes/sbx-1/commands", Reply(200, json=[]))
        for _ in range(5):
            sbx.commands.list()
        ports = {r.client[1] for r in self.reqs}
        self.assertEqual(len(ports), 1, ports)

    def test_server_closed_idle_connection_is_replaced(self):
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/commands",
                        Reply(200, json={"stdout": "", "stderr": "", "exit_code": 0}, close_after=True))
        for _ in range(3):
            sbx.commands.run("true")  # POSTs: must not be lost, must not be duplicated
        self.assertEqual(len(self.reqs), 3)
        self.assertEqual(len({r.client[1] for r in self.reqs}), 3)

    def test_connect_error_is_reported(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        from declaw import Sandbox
        with self.assertRaises(SandboxException) as cm:
            Sandbox.get_info("sbx-1", api_key="k", domain=f"127.0.0.1:{port}")
        self.assertIn("cannot connect", str(cm.exception))

    def test_domain_schemes(self):
        self.assertEqual(ConnectionConfig(domain="localhost:8080").api_url, "http://localhost:8080")
        self.assertEqual(ConnectionConfig(domain="api.example.com:443").api_url, "https://api.example.com:443")
        self.assertEqual(ConnectionConfig(domain="api.example.com").api_url, "https://api.example.com")
        self.assertEqual(ConnectionConfig(domain="[::1]:3000").api_url, "http://[::1]:3000")
        cfg = ConnectionConfig(api_url="http://h:1/prefix/")
        self.assertEqual((cfg.host, cfg.port, cfg.base_path), ("h", 1, "/prefix"))
        self.assertEqual(ConnectionConfig().domain, "api.declaw.ai")
        self.assertEqual(ConnectionConfig().request_timeout, 30.0)
        import os
        os.environ["DECLAW_API_URL"] = "http://override:9"
        try:
            self.assertEqual(ConnectionConfig().api_url, "http://override:9")
            self.assertEqual(ConnectionConfig(domain="x:8").api_url, "http://x:8")
        finally:
            del os.environ["DECLAW_API_URL"]


if __name__ == "__main__":
    unittest.main()
