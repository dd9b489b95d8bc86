from __future__ import annotations

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from declaw import _http  # noqa: E402
from declaw import Sandbox  # noqa: E402

from fake_server import FakeDeclaw, Reply  # noqa: E402

API_KEY = "dk_test_123"


class FakeServerTest(unittest.TestCase):
    fake: FakeDeclaw

    @classmethod
    def setUpClass(cls) -> None:
        cls.fake = FakeDeclaw()
        cls._old_backoff = _http.BACKOFF_BASE
        _http.BACKOFF_BASE = 0.01

    @classmethod
    def tearDownClass(cls) -> None:
        _http.BACKOFF_BASE = cls._old_backoff
        cls.fake.close()
        _http.close_all_connections()

    def setUp(self) -> None:
        self.fake.reset()
        self._env = {k: os.environ.pop(k) for k in ("DECLAW_API_KEY", "DECLAW_DOMAIN", "DECLAW_API_URL") if k in os.environ}

    def tearDown(self) -> None:
        os.environ.update(self._env)

    def kw(self, **extra):
        d = {"api_key": API_KEY, "domain": self.fake.domain}
        d.update(extra)
        return d

    def sandbox(self, sandbox_id: str = "sbx-1") -> Sandbox:
        self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": sandbox_id, "envd_access_token": "tok"}))
        sbx = Sandbox.create(**self.kw())
        self.fake.reset()
        return sbx

    @property
    def reqs(self):
        return self.fake.requests

    def last(self):
        return self.fake.requests[-1]


def wait_until(cond, timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``cond()`` until it is true or ``timeout`` seconds passed."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return bool(cond())
