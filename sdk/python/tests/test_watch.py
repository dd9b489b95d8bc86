import threading
import unittest

from helpers import FakeServerTest, wait_until
from fake_server import Reply, sse_event

from declaw import FilesystemEvent, FilesystemEventType, NotFoundException, SandboxException, WatchHandle

W = "/sandboxes/sbx-1/files/watch"
TS = "2026-11-27T05:00:01.5Z"


def fs_event(eid, type, name, is_dir=None):
    d = {"type": type, "path": "/home/user/proj/" + name, "name": name, "timestamp": TS, "event_id": eid}
    if is_dir is not None:
        d["is_dir"] = is_dir
    return sse_event(type, d, id=str(eid))


START = sse_event("start", {"type": "start", "watcher_id": "w-1", "path": "/home/user/proj", "timestamp": TS})


def split(data: bytes, n: int):
    return [data[i:i + n] for i in range(0, len(data), n)]


class WatchTest(FakeServerTest):
    def setUp(self):
        super().setUp()
        self.sbx = self.sandbox()
        self.fake.route("POST", W, Reply(200, json={"watcher_id": "w-1"}))
        self.fake.route("DELETE", W + "/w-1", Reply(204))

    def test_wire_format_and_events_across_chunk_boundaries(self):
        stream = (START
                  + fs_event(1, "create", "a.txt")
                  + fs_event(2, "write", "a.txt")
                  + sse_event("gap", {"type": "gap", "timestamp": TS, "error": "events were dropped"})
                  + fs_event(3, "create", "sub", is_dir=True)
                  + sse_event("error", {"type": "error", "path": "/home/user/proj/sub", "timestamp": TS,
                                        "error": "watch limit"})
                  + fs_event(4, "rename", "a.txt") + fs_event(5, "create", "b.txt")
                  + fs_event(6, "chmod", "b.txt") + fs_event(7, "remove", "b.txt")
                  + b": keepalive\r\n\r\n")
        stream = stream.replace(b"\n", b"\r\n", 3)  # mixed line ends
        want = [(1, "create", "a.txt", False), (2, "write", "a.txt", False), (3, "create", "sub", True),
                (4, "rename", "a.txt", False), (5, "create", "b.txt", False), (6, "chmod", "b.txt", False),
                (7, "remove", "b.txt", False)]
        for size in (1, 2, 3, 7, 64, len(stream)):
            self.fake.reset()
            self.fake.route("POST", W, Reply(200, json={"watcher_id": "w-1"}))
            self.fake.route("DELETE", W + "/w-1", Reply(204))
            self.fake.route("GET", W + "/w-1/stream", Reply(200, sse=split(stream, size)))
            h = self.sbx.files.watch_dir("/home/user/proj", recursive=True)
            self.assertIsInstance(h, WatchHandle)
            got = list(h)  # the stream ends: the watcher was deleted
            self.assertEqual([(e.event_id, e.type, e.name, e.is_dir) for e in got], want, size)
            self.assertEqual(h.gaps, 1)
            self.assertEqual(h.errors, ["watch limit"])
            self.assertFalse(h.is_running)
            e = got[0]
            self.assertIsInstance(e, FilesystemEvent)
            self.assertIs(e.type, FilesystemEventType.CREATE)
            self.assertEqual(e.path, "/home/user/proj/a.txt")
            self.assertEqual(e.timestamp.isoformat(), "2026-11-27T05:00:01.500000+00:00")
            post, get = self.reqs[0], self.reqs[1]
            self.assertEqual((post.method, post.path), ("POST", W))
            self.assertEqual(post.json, {"path": "/home/user/proj", "recursive": True})
            self.assertEqual((get.method, get.path, get.raw_query), ("GET", W + "/w-1/stream", ""))
            self.assertEqual(get.headers["accept"], "text/event-stream")

    def test_user_and_defaults(self):
        self.fake.route("GET", W + "/w-1/stream", Reply(200, sse=[START]))
        h = self.sbx.files.watch_dir("proj", user="user")
        self.assertEqual(self.reqs[0].json, {"path": "proj", "recursive": False, "username": "user"})
        self.assertEqual(list(h), [])

    def test_resume_after_drop_without_loss_or_repeat(self):
        first = Reply(200, sse=[START, fs_event(1, "create", "a"), fs_event(2, "write", "a")], truncate=True)
        second = Reply(200, sse=[START, fs_event(2, "write", "a"), fs_event(3, "remove", "a")])
        self.fake.route("GET", W + "/w-1/stream", [first, second])
        h = self.sbx.files.watch_dir("/p")
        self.assertEqual([(e.event_id, e.type) for e in h], [(1, "create"), (2, "write"), (3, "remove")])
        streams = [r for r in self.reqs if r.path.endswith("/stream")]
        self.assertEqual([r.query for r in streams], [{}, {"last_event_id": ["2"]}])

    def test_get_new_events_stop_and_context_manager(self):
        hold = threading.Event()
        self.fake.route("GET", W + "/w-1/stream",
                        Reply(200, sse=[START, fs_event(1, "create", "a"), fs_event(2, "create", "b")], hold=hold))
        with self.sbx.files.watch_dir("/p") as h:
            self.assertTrue(wait_until(lambda: len(h._events) == 2))
            self.assertEqual([e.name for e in h.get_new_events()], ["a", "b"])
            self.assertEqual(h.get_new_events(), [])  # does not block
            self.assertTrue(h.is_running)
        # leaving the block deletes the watcher and drops the stream
        deletes = [r for r in self.reqs if r.method == "DELETE"]
        self.assertEqual([r.path for r in deletes], [W + "/w-1"])
        self.assertFalse(h.is_running)
        self.assertTrue(wait_until(lambda: self.fake.disconnects == [W + "/w-1/stream"]))
        h.stop()  # idempotent: no second DELETE
        self.assertEqual(len([r for r in self.reqs if r.method == "DELETE"]), 1)
        self.assertEqual(h.get_new_events(), [])
        hold.set()

    def test_on_event_runs_in_background_thread(self):
        hold = threading.Event()
        self.fake.route("GET", W + "/w-1/stream", Reply(200, sse=[START, fs_event(1, "create", "a"),
                                                                   fs_event(2, "write", "a")], hold=hold))
        got, threads = [], set()

        def on_event(ev):
            threads.add(threading.current_thread().name)
            got.append(ev)
            if ev.event_id == 1:
                raise RuntimeError("a failing callback does not end the watch")

        with self.assertLogs("declaw", "ERROR"):
            h = self.sbx.files.watch_dir("/p", on_event=on_event)
            self.assertTrue(wait_until(lambda: len(got) == 2))
        self.assertEqual([e.event_id for e in got], [1, 2])
        self.assertNotIn(threading.current_thread().name, threads)
        self.assertEqual(h.get_new_events(), [])  # delivered to the callback, not buffered
        self.fake.route("DELETE", W + "/w-1", Reply(404, json={"message": "gone", "code": "watcher_not_found"}))
        h.stop()  # a watcher that is already gone is fine
        hold.set()

    def test_errors(self):
        self.fake.route("POST", W, Reply(404, json={"message": "no such dir", "code": "file_not_found"}))
        with self.assertRaises(NotFoundException):
            self.sbx.files.watch_dir("/nope")
        self.fake.route("POST", W, Reply(200, json={}))
        with self.assertRaises(SandboxException):
            self.sbx.files.watch_dir("/p")
        self.fake.route("POST", W, Reply(200, json={"watcher_id": "w-1"}))
        self.fake.route("GET", W + "/w-1/stream", Reply(404, json={"message": "gone", "code": "watcher_not_found"}))
        h = self.sbx.files.watch_dir("/p")
        with self.assertRaises(NotFoundException) as cm:
            list(h)
        self.assertEqual(cm.exception.code, "watcher_not_found")
        with self.assertRaises(ValueError):
            self.sbx.files.watch_dir("")


if __name__ == "__main__":
    unittest.main()
