import unittest

from helpers import FakeServerTest
from fake_server import Reply

from declaw import (
    AsyncSandbox,
    InvalidArgumentException,
    RateLimitException,
    Sandbox,
    SandboxInfo,
    SandboxMetrics,
)


class ResourcesTest(FakeServerTest):
    def test_create_sends_resources(self):
        self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": "sbx-1"}))
        Sandbox.create(cpu_count=0.5, memory_mb=1024, disk_mb=4096.0, **self.kw())
        self.assertEqual(
            self.last().json,
            {"template": "base", "timeout": 300, "secure": True, "cpu_count": 0.5, "memory_mb": 1024, "disk_mb": 4096},
        )

    def test_create_without_resources_sends_none(self):
        self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": "sbx-1"}))
        Sandbox.create(cpu_count=2.0, **self.kw())
        self.assertEqual(self.last().json, {"template": "base", "timeout": 300, "secure": True, "cpu_count": 2})

    def test_bad_resources_refused_locally(self):
        for kw in ({"memory_mb": 0}, {"memory_mb": -1}, {"memory_mb": 512.5}, {"cpu_count": "two"},
                   {"disk_mb": True}, {"cpu_count": 0}):
            with self.subTest(kw=kw), self.assertRaises(InvalidArgumentException):
                Sandbox.create(**kw, **self.kw())
        self.assertEqual(len(self.reqs), 0)

    def test_limit_exceeded_is_invalid_argument(self):
        self.fake.route("POST", "/sandboxes", Reply(400, json={
            "message": "memory_mb: 999999 is over this server's maximum 8192", "code": "limit_exceeded"}))
        with self.assertRaises(InvalidArgumentException) as cm:
            Sandbox.create(memory_mb=999999, **self.kw())
        self.assertEqual(cm.exception.code, "limit_exceeded")
        self.assertIn("maximum 8192", cm.exception.message)
        self.assertEqual(len(self.reqs), 1)

    def test_insufficient_capacity_is_rate_limit_after_retries(self):
        self.fake.route("POST", "/sandboxes", Reply(503, json={
            "message": "not enough host memory for another sandbox", "code": "insufficient_capacity"},
            headers={"Retry-After": "5"}))
        with self.assertRaises(RateLimitException) as cm:
            Sandbox.create(**self.kw())
        self.assertEqual((cm.exception.status, cm.exception.code, cm.exception.retry_after), (503, "insufficient_capacity", 5.0))
        self.assertEqual(len(self.reqs), 3)  # retried like any 5xx, with the same key
        self.assertEqual(len({r.headers["idempotency-key"] for r in self.reqs}), 1)

    def test_info_oom_fields(self):
        info = SandboxInfo.from_dict({
            "sandbox_id": "sbx-1", "state": "killed", "end_reason": "oom", "oom_kills": 1,
            "last_oom_at": "2026-12-08T01:45:34.743125Z",
            "resources": {"vcpus": 1, "memory_mb": 256, "disk_mb": 2048, "pids": 1024},
        })
        self.assertEqual((info.state, info.end_reason, info.oom_kills), ("killed", "oom", 1))
        self.assertEqual(info.last_oom_at.year, 2026)
        self.assertEqual((info.resources.vcpus, info.resources.memory_mb, info.resources.disk_mb, info.resources.pids), (1, 256, 2048, 1024))
        self.assertNotIn("resources", info.extra)
        plain = SandboxInfo.from_dict({"sandbox_id": "sbx-2"})
        self.assertEqual((plain.resources, plain.oom_kills, plain.last_oom_at, plain.end_reason), (None, 0, None, None))

    def test_get_info_and_metrics_against_limits(self):
        self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": "sbx-1"}))
        self.fake.route("GET", "/sandboxes/sbx-1", Reply(200, json={
            "sandbox_id": "sbx-1", "state": "running", "oom_kills": 0,
            "resources": {"vcpus": 2, "memory_mb": 512, "disk_mb": 2048, "pids": 1024}}))
        self.fake.route("GET", "/sandboxes/sbx-1/metrics", Reply(200, json=[{
            "timestamp": "2026-12-08T01:45:34Z", "cpu_usage_percent": 12.5, "memory_usage_mb": 40.0,
            "cpu_count": 2, "memory_limit_mb": 512, "disk_usage_mb": 3.5, "disk_limit_mb": 2016}]))
        sbx = Sandbox.create(**self.kw())
        self.assertEqual(sbx.get_info().resources.memory_mb, 512)
        m = sbx.get_metrics()[0]
        self.assertIsInstance(m, SandboxMetrics)
        self.assertEqual((m.cpu_count, m.memory_limit_mb, m.disk_usage_mb, m.disk_limit_mb), (2, 512, 3.5, 2016))

    def test_async_create_sends_resources(self):
        import asyncio

        self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": "sbx-1"}))
        asyncio.run(AsyncSandbox.create(memory_mb=256, **self.kw()))
        self.assertEqual(self.last().json["memory_mb"], 256)


if __name__ == "__main__":
    unittest.main()
