import base64
import unittest

from helpers import FakeServerTest
from fake_server import Reply, sse_event

from declaw import PtySize
from declaw._http import SSEParser


def feed_all(chunks):
    p = SSEParser()
    out = []
    for c in chunks:
        out.extend(p.feed(c))
    out.extend(p.flush())
    return [(e.event, e.data, e.id) for e in out]


class SSEParserTest(unittest.TestCase):
    def test_every_split(self):
        stream = ("event: stdout\r\ndata: {\"a\": \"\u00e9\u2603\"}\r\n\r\n"
                  ": comment\n"
                  "data: line1\ndata:line2\nid: 9\n\n"
                  "event: exit\rdata: {}\r\r").encode()
        want = [("stdout", '{"a": "\u00e9\u2603"}', None), ("message", "line1\nline2", "9"), ("exit", "{}", None)]
        self.assertEqual(feed_all([stream]), want)
        for i in range(len(stream) + 1):
            self.assertEqual(feed_all([stream[:i], stream[i:]]), want, i)
        self.assertEqual(feed_all([bytes([b]) for b in stream]), want)

    def test_unterminated_event_dropped(self):
        self.assertEqual(feed_all([b"data: x\n\ndata: partial"]), [("message", "x", None)])


class PtyTest(FakeServerTest):
    def test_pty_lifecycle(self):
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/pty", Reply(200, json={"pid": 33}))
        out = [sse_event("data", {"data": base64.b64encode(b"$ ").decode()}),
               sse_event("data", {"data": base64.b64encode(b"\x1b[0mhi\r\n").decode()}),
               sse_event("exit", {"exit_code": 0})]
        self.fake.route("GET", "/sandboxes/sbx-1/pty/33/stream", Reply(200, sse=out))
        h = sbx.pty.create(size=PtySize(cols=100, rows=30), cwd="/tmp")
        create = [r for r in self.reqs if r.method == "POST"][0]
        self.assertEqual(create.json, {"size": {"cols": 100, "rows": 30}, "cwd": "/tmp", "timeout": 3600})
        self.assertEqual(self.last().headers["accept"], "text/event-stream")

        self.fake.route("POST", "/sandboxes/sbx-1/pty/33/stdin", Reply(200, json={}))
        h.send_stdin("ls\n")
        self.assertEqual(self.last().json, {"data": "ls\n"})  # text, not base64
        self.fake.route("PATCH", "/sandboxes/sbx-1/pty/33", Reply(200, json={}))
        h.resize(PtySize(120, 40))
        self.assertEqual(self.last().json, {"size": {"cols": 120, "rows": 40}})

        got = []
        self.assertEqual(h.wait(on_data=got.append), 0)
        self.assertEqual(b"".join(got), b"$ \x1b[0mhi\r\n")

        self.fake.route("DELETE", "/sandboxes/sbx-1/pty/33", Reply(200, json={"killed": True}))
        self.assertTrue(h.kill())
        with self.assertRaises(ValueError):
            PtySize(0, 10).to_dict()


class StdioTest(FakeServerTest):
    def test_stdio_resume_after_drop(self):
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/stdio", Reply(200, json={"cmd_id": "c-1"}))
        h = sbx.stdio.start("cat", envs={"A": "1"})
        self.assertEqual(self.last().json, {"cmd": "cat", "envs": {"A": "1"}})

        self.fake.route("POST", "/sandboxes/sbx-1/stdio/c-1/stdin", Reply(200, json={}))
        h.send_stdin(b"\x00hello")
        self.assertEqual(self.last().json, {"data": base64.b64encode(b"\x00hello").decode()})
        self.fake.route("POST", "/sandboxes/sbx-1/stdio/c-1/stdin/close", Reply(200, json={}))
        h.close_stdin()
        self.assertEqual(self.last().path, "/sandboxes/sbx-1/stdio/c-1/stdin/close")

        def b64(x):
            return base64.b64encode(x).decode()

        first = Reply(200, sse=[sse_event("stdout", {"data": b64(b"one "), "entry_id": 1}),
                                sse_event("stderr", {"data": b64(b"err"), "entry_id": 2})], truncate=True)
        second = Reply(200, sse=[sse_event("stdout", {"data": b64(b"two"), "entry_id": 3}),
                                 sse_event("exit", {"exit_code": 4})])
        self.fake.route("GET", "/sandboxes/sbx-1/stdio/c-1/stream", [first, second])
        out, err = [], []
        self.assertEqual(h.wait(on_stdout=out.append, on_stderr=err.append), 4)
        self.assertEqual((b"".join(out), b"".join(err)), (b"one two", b"err"))
        streams = [r for r in self.reqs if r.path.endswith("/stream")]
        self.assertEqual([r.query for r in streams], [{}, {"last_entry_id": ["2"]}])

        self.fake.route("DELETE", "/sandboxes/sbx-1/stdio/c-1", Reply(404, json={"message": "gone"}))
        self.assertFalse(h.kill())


if __name__ == "__main__":
    unittest.main()
