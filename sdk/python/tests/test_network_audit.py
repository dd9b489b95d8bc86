import unittest

from helpers import FakeServerTest
from fake_server import Reply

from declaw import InvalidArgumentException, NetworkPolicy


class UpdateNetworkTest(FakeServerTest):
    def test_update_network_forms(self):
        sbx = self.sandbox("sbx-net")
        self.fake.route("PUT", "/sandboxes/sbx-net/network", Reply(200, json={"sandbox_id": "sbx-net", "state": "running"}))
        info = sbx.update_network(allow_out=["api.example.com"], deny_out=["0.0.0.0/0"])
        self.assertEqual(info.sandbox_id, "sbx-net")
        r = self.last()
        self.assertEqual((r.method, r.path), ("PUT", "/sandboxes/sbx-net/network"))
        self.assertEqual(r.json, {"allow_out": ["api.example.com"], "deny_out": ["0.0.0.0/0"]})

        sbx.update_network(NetworkPolicy(allow_out=["10.0.0.0/8"]))
        self.assertEqual(self.last().json.get("allow_out"), ["10.0.0.0/8"])

        sbx.update_network(allow_internet_access=False)
        self.assertEqual(self.last().json, {"deny_out": ["0.0.0.0/0"]})

    def test_update_network_rejects_bad_input(self):
        sbx = self.sandbox("sbx-net2")
        n = len(self.fake.requests)
        with self.assertRaises(InvalidArgumentException):
            sbx.update_network({"allow_out": ["x"]}, allow_out=["y"])
        with self.assertRaises((InvalidArgumentException, ValueError)):
            sbx.update_network(42)
        self.assertEqual(len(self.fake.requests), n, "bad input must not reach the server")


class AuditTest(FakeServerTest):
    def test_audit_list_and_iter(self):
        sbx = self.sandbox("sbx-aud")
        events = [{"id": i, "sandbox_id": "sbx-aud", "type": "egress.blocked", "timestamp": "2026-11-27T05:00:00Z",
                   "data": {"host": "evil.test"}} for i in range(1, 4)]
        self.fake.route("GET", "/sandboxes/sbx-aud/audit", Reply(200, json={"events": events, "next_cursor": None}))
        got = sbx.audit.list(type="egress", limit=10)
        self.assertEqual([e.id for e in got], [1, 2, 3])
        self.assertEqual(got[0].type, "egress.blocked")
        self.assertEqual(got[0].data, {"host": "evil.test"})
        r = self.last()
        self.assertEqual((r.method, r.path), ("GET", "/sandboxes/sbx-aud/audit"))
        self.assertIn("type=egress", r.raw_query)
        self.assertIn("limit=10", r.raw_query)
        self.assertEqual([e.id for e in sbx.audit], [1, 2, 3])
        self.assertEqual([e.id for e in sbx.get_audit_log()], [1, 2, 3])


if __name__ == "__main__":
    unittest.main()
