import unittest
from datetime import datetime, timezone

from helpers import FakeServerTest
from fake_server import Reply

from declaw import ConflictException, NotFoundException, Sandbox, SandboxException, SnapshotInfo

SNAP = {"snapshot_id": "snap-0a1b2c3d", "sandbox_id": "sbx-1", "template_id": "base", "source": "manual",
        "kind": "filesystem", "created_at": "2026-11-27T05:00:00Z", "size_bytes": 1048576, "node_id": "n1"}


class SnapshotTest(FakeServerTest):
    def test_create_snapshot(self):
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/snapshot", Reply(201, json=SNAP))
        info = sbx.create_snapshot()
        r = self.last()
        self.assertEqual((r.method, r.path, r.raw_query, r.json), ("POST", "/sandboxes/sbx-1/snapshot", "", {}))
        self.assertEqual(r.headers["content-type"], "application/json")
        self.assertIsInstance(info, SnapshotInfo)
        self.assertEqual((info.snapshot_id, info.sandbox_id, info.template_id, info.source, info.kind, info.size_bytes),
                         ("snap-0a1b2c3d", "sbx-1", "base", "manual", "filesystem", 1048576))
        self.assertEqual(info.created_at, datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc))
        self.assertEqual(info.extra, {"node_id": "n1"})
        self.assertEqual(sbx.snapshot().snapshot_id, "snap-0a1b2c3d")  # alias

    def test_memory_snapshot_refused(self):
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/snapshot",
                        Reply(409, json={"message": "memory snapshots are not supported", "code": "not_supported"}))
        with self.assertRaises(ConflictException) as cm:
            sbx.create_snapshot(memory=True)
        self.assertEqual(cm.exception.code, "not_supported")
        self.assertEqual(self.last().json, {"memory": True})
        self.assertEqual(len(self.reqs), 1)

    def test_create_snapshot_not_retried_on_5xx(self):
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/snapshot", Reply(500, json={"message": "boom"}))
        with self.assertRaises(SandboxException):
            sbx.create_snapshot()
        self.assertEqual(len(self.reqs), 1)
        self.fake.route("POST", "/sandboxes/sbx-1/snapshot", Reply(201, json={}))
        with self.assertRaises(SandboxException):
            sbx.create_snapshot()  # no snapshot_id

    def test_list_snapshots(self):
        sbx = self.sandbox()
        older = dict(SNAP, snapshot_id="snap-old", source="pause", created_at="2026-11-27T04:00:00Z")
        self.fake.route("GET", "/sandboxes/sbx-1/snapshots", Reply(200, json={"snapshots": [SNAP, older]}))
        snaps = sbx.list_snapshots()
        self.assertEqual([s.snapshot_id for s in snaps], ["snap-0a1b2c3d", "snap-old"])  # order kept (newest first)
        self.assertEqual((self.last().method, self.last().path), ("GET", "/sandboxes/sbx-1/snapshots"))
        self.fake.route("GET", "/sandboxes/sbx-2/snapshots", Reply(200, json=[older]))
        self.assertEqual([s.source for s in Sandbox.list_snapshots("sbx-2", **self.kw())], ["pause"])
        self.fake.route("GET", "/sandboxes/sbx-1/snapshots", Reply(200, json={"snapshots": []}))
        self.assertEqual(sbx.list_snapshots(), [])

    def test_delete_snapshot(self):
        sbx = self.sandbox()
        self.fake.route("DELETE", "/sandboxes/sbx-1/snapshots/snap-1", Reply(200, json={"deleted": True}))
        self.assertTrue(sbx.delete_snapshot("snap-1"))
        self.assertEqual((self.last().method, self.last().path), ("DELETE", "/sandboxes/sbx-1/snapshots/snap-1"))
        self.fake.route("DELETE", "/sandboxes/sbx-1/snapshots/snap-1", Reply(200, json={"deleted": False}))
        self.assertFalse(Sandbox.delete_snapshot("sbx-1", "snap-1", **self.kw()))
        self.fake.route("DELETE", "/sandboxes/sbx-1/snapshots/a%2Fb", Reply(200, json={"deleted": False}))
        self.assertFalse(sbx.delete_snapshot("a/b"))  # escaped into one segment
        self.fake.route("DELETE", "/sandboxes/sbx-1/snapshots/snap-p",
                        Reply(409, json={"message": "pause snapshot of a paused sandbox", "code": "conflict"}))
        with self.assertRaises(ConflictException):
            sbx.delete_snapshot("snap-p")
        with self.assertRaises(ValueError):
            sbx.delete_snapshot("")

    def test_restore_in_place(self):
        # Declaw's answer: the same id, no sandbox object: the SDK connects to it.
        self.fake.route("POST", "/sandboxes/sbx-1/restore",
                        Reply(200, json={"sandbox_id": "sbx-1", "snapshot_id": "snap-1", "node_id": "n1"}))
        self.fake.route("GET", "/sandboxes/sbx-1", Reply(200, json={"sandbox_id": "sbx-1", "template_id": "python",
                                                                  "state": "running"}))
        same = Sandbox.restore("sbx-1", snapshot_id="snap-1", **self.kw())
        post, get = self.reqs[-2], self.reqs[-1]
        self.assertEqual((post.method, post.path, post.raw_query, post.json),
                         ("POST", "/sandboxes/sbx-1/restore", "snapshot_id=snap-1", {}))
        self.assertEqual((get.method, get.path), ("GET", "/sandboxes/sbx-1"))
        self.assertIsInstance(same, Sandbox)
        self.assertEqual((same.sandbox_id, same.template_id, same.restored_from), ("sbx-1", "python", "snap-1"))
        # the restored sandbox is usable with the same configuration
        self.fake.route("GET", "/sandboxes/sbx-1/status", Reply(200, json={"is_running": True}))
        self.assertTrue(same.is_running())
        self.assertEqual(self.last().headers["x-api-key"], "dk_test_123")

        # Our server's answer carries the sandbox: no second call.
        answer = {"sandbox_id": "sbx-1", "snapshot_id": "snap-2", "node_id": "local", "envd_access_token": "e",
                  "sandbox": {"sandbox_id": "sbx-1", "template_id": "base", "state": "running"}}
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/restore", Reply(200, json=answer))
        n = len(self.reqs)
        again = sbx.restore()  # instance form, server picks the snapshot
        self.assertEqual(len(self.reqs), n + 1)
        self.assertEqual((self.last().raw_query, again.sandbox_id, again.template_id, again.envd_access_token,
                          again.restored_from), ("", "sbx-1", "base", "e", "snap-2"))
        # the handle restored from keeps working on the same id
        self.fake.route("GET", "/sandboxes/sbx-1/status", Reply(200, json={"is_running": True}))
        self.assertTrue(sbx.is_running())

    def test_restore_fork(self):
        answer = {"sandbox_id": "sbx-new", "snapshot_id": "snap-1", "node_id": "n1", "envd_access_token": "e",
                  "sandbox": {"sandbox_id": "sbx-new", "template_id": "python", "state": "running"}}
        self.fake.route("POST", "/sandboxes/sbx-1/restore", Reply(201, json=answer))
        new = Sandbox.restore("sbx-1", "snap-1", fork=True, **self.kw())
        self.assertEqual((self.last().raw_query, new.sandbox_id, new.template_id, new.restored_from),
                         ("snapshot_id=snap-1&fork=true", "sbx-new", "python", "snap-1"))
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/restore", Reply(201, json=answer))
        new2 = sbx.restore(fork=True)
        self.assertEqual((self.last().raw_query, new2.sandbox_id), ("fork=true", "sbx-new"))
        self.fake.route("POST", "/sandboxes/sbx-1/restore", Reply(201, json={"snapshot_id": "snap-1"}))
        with self.assertRaises(SandboxException):
            Sandbox.restore("sbx-1", fork=True, **self.kw())

    def test_restore_errors_not_retried(self):
        self.fake.route("POST", "/sandboxes/sbx-1/restore", Reply(502, json={"message": "bad gateway"}))
        with self.assertRaises(SandboxException):
            Sandbox.restore("sbx-1", **self.kw())
        self.assertEqual(len(self.reqs), 1)
        self.fake.route("POST", "/sandboxes/sbx-1/restore",
                        Reply(404, json={"message": "no snapshot", "code": "snapshot_not_found"}))
        with self.assertRaises(NotFoundException):
            Sandbox.restore("sbx-1", "snap-x", **self.kw())


class KillByIdTest(FakeServerTest):
    def test_kill_by_id(self):
        self.fake.route("DELETE", "/sandboxes/sbx-9", Reply(202, json={"queued": True}))
        self.assertTrue(Sandbox.kill_by_id("sbx-9", **self.kw()))
        self.assertEqual((self.last().path, self.last().raw_query), ("/sandboxes/sbx-9", "async=true"))
        self.fake.route("DELETE", "/sandboxes/sbx-9", Reply(404, json={"message": "gone"}))
        self.assertFalse(Sandbox.kill_by_id("sbx-9", wait=True, **self.kw()))
        self.assertEqual(self.last().raw_query, "")


class ParseTimeTest(unittest.TestCase):
    def test_any_number_of_fractional_digits(self):
        from declaw.models import parse_time
        for text, micro in (("2026-11-27T05:00:01.5Z", 500000), ("2026-11-27T05:00:01.12Z", 120000),
                            ("2026-11-27T05:00:01.1234Z", 123400), ("2026-11-27T05:00:01.123456789+00:00", 123456),
                            ("2026-11-27T05:00:01Z", 0)):
            self.assertEqual(parse_time(text).microsecond, micro, text)


class MetricsPauseTest(FakeServerTest):
    def test_metrics_list(self):
        sbx = self.sandbox()
        samples = [{"timestamp": "2026-11-27T05:00:00Z", "cpu_usage_percent": 12.5, "memory_usage_mb": 64},
                   {"timestamp": "2026-11-27T05:00:05.123456789Z", "cpu_usage_percent": 0, "memory_usage_mb": 65.5}]
        self.fake.route("GET", "/sandboxes/sbx-1/metrics", Reply(200, json=samples))
        m = sbx.get_metrics()
        self.assertEqual(self.last().raw_query, "")
        self.assertEqual([(x.cpu_usage_percent, x.memory_usage_mb, x.disk_usage_mb) for x in m],
                         [(12.5, 64, None), (0, 65.5, None)])
        self.assertEqual(m[1].timestamp.microsecond, 123456)
        start = datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc)
        sbx.get_metrics(start=start, end=1795000000)
        self.assertEqual(self.last().query, {"start": ["2026-11-27T05:00:00Z"], "end": ["1795000000"]})
        self.fake.route("GET", "/sandboxes/sbx-1/metrics", Reply(200, json=[]))
        self.assertEqual(sbx.get_metrics(), [])

    def test_pause_resume(self):
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/pause", Reply(200, json={}))
        self.fake.route("POST", "/sandboxes/sbx-1/resume", Reply(200, json={}))
        self.assertIsNone(sbx.pause())
        self.assertEqual((self.last().path, self.last().json), ("/sandboxes/sbx-1/pause", {}))
        self.assertIsNone(sbx.resume(timeout=120))
        self.assertEqual((self.last().path, self.last().json), ("/sandboxes/sbx-1/resume", {"timeout": 120}))
        Sandbox.pause("sbx-1", **self.kw())
        self.assertEqual(self.last().path, "/sandboxes/sbx-1/pause")
        again = Sandbox.resume("sbx-1", **self.kw())
        self.assertEqual((self.last().json, again.sandbox_id), ({}, "sbx-1"))
        self.fake.route("POST", "/sandboxes/sbx-1/pause",
                        Reply(409, json={"message": "runtime cannot pause", "code": "not_supported"}))
        with self.assertRaises(ConflictException) as cm:
            sbx.pause()
        self.assertEqual(cm.exception.code, "not_supported")
        with self.assertRaises(ValueError):
            sbx.resume(timeout=-1)


if __name__ == "__main__":
    unittest.main()
