import json
import os
import unittest
import uuid

from helpers import API_KEY, FakeServerTest
from fake_server import Reply

from declaw import (
    ALL_TRAFFIC,
    AuditConfig,
    AuthenticationException,
    ConflictException,
    InjectionDefenseConfig,
    InsufficientBalanceException,
    InvalidArgumentException,
    NetworkPolicy,
    NotEnoughSpaceException,
    NotFoundException,
    PIIConfig,
    RateLimitException,
    Sandbox,
    SandboxException,
    SandboxInfo,
    SecurityPolicy,
    TemplateException,
    TimeoutException,
)


class CreateTest(FakeServerTest):
    def test_create_defaults_wire_format(self):
        self.fake.route(
            "POST",
            "/sandboxes",
            Reply(201, json={"sandbox_id": "sbx-abc12345", "envd_access_token": "e", "traffic_access_token": "t",
                             "sandbox_domain": "d", "template_id": "base", "state": "running"}),
        )
        sbx = Sandbox.create(**self.kw())
        self.assertEqual(sbx.sandbox_id, "sbx-abc12345")
        self.assertEqual(sbx.envd_access_token, "e")
        self.assertEqual(sbx.traffic_access_token, "t")
        self.assertEqual(sbx.template_id, "base")
        self.assertEqual(len(self.reqs), 1)
        r = self.last()
        self.assertEqual((r.method, r.path, r.raw_query), ("POST", "/sandboxes", ""))
        self.assertEqual(r.json, {"template": "base", "timeout": 300, "secure": True})
        self.assertEqual(r.headers["authorization"], f"Bearer {API_KEY}")
        self.assertEqual(r.headers["x-api-key"], API_KEY)
        self.assertEqual(r.headers["content-type"], "application/json")
        uuid.UUID(r.headers["idempotency-key"], version=4)
        self.assertTrue(r.headers["user-agent"].startswith("declaw-python/"))

    def test_create_all_fields(self):
        self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": "sbx-1"}))
        Sandbox.create(
            template="python",
            timeout=60,
            metadata={"team": "a"},
            envs={"FOO": "bar"},
            secure=False,
            network={"allow_out": ["example.com"]},
            lifecycle={"on_timeout": "pause", "auto_resume": True},
            **self.kw(),
        )
        self.assertEqual(
            self.last().json,
            {
                "template": "python",
                "timeout": 60,
                "secure": False,
                "metadata": {"team": "a"},
                "envs": {"FOO": "bar"},
                "network": {"allow_out": ["example.com"]},
                "lifecycle": {"on_timeout": "pause", "auto_resume": True},
            },
        )

    def test_allow_internet_access_false_wins(self):
        self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": "sbx-1"}))
        Sandbox.create(allow_internet_access=False, network={"allow_out": ["1.2.3.4"]}, **self.kw())
        self.assertEqual(self.last().json["network"], {"deny_out": ["0.0.0.0/0"]})
        self.assertEqual(ALL_TRAFFIC, "0.0.0.0/0")

    def test_security_policy_json_and_network_copy(self):
        self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": "sbx-1"}))
        policy = SecurityPolicy(
            pii=PIIConfig(enabled=True, types=["email", "ssn", "credit_card", "api_key"], action="redact"),
            injection_defense=InjectionDefenseConfig(enabled=True, sensitivity="high", action="block"),
            audit=AuditConfig(enabled=True, log_request_body=True, log_response_body=True),
            network=NetworkPolicy(allow_out=["api.openai.com"], deny_out=[ALL_TRAFFIC]),
        )
        Sandbox.create(template="python", security=policy, **self.kw())
        body = self.last().json
        self.assertEqual(set(body["security"]), {"policy_json"})
        self.assertIsInstance(body["security"]["policy_json"], str)
        sent = json.loads(body["security"]["policy_json"])
        self.assertEqual(sent, policy.to_dict())
        self.assertEqual(sent["pii"]["types"], ["email", "ssn", "credit_card", "api_key"])
        self.assertEqual(sent["injection_defense"]["action"], "block")
        self.assertEqual(sent["injection_defense"]["sensitivity"], "high")
        self.assertTrue(sent["audit"]["log_request_body"])
        self.assertTrue(policy.requires_tls_interception)
        self.assertEqual(
            body["network"],
            {"allow_out": ["api.openai.com"], "deny_out": ["0.0.0.0/0"], "allow_public_traffic": True},
        )

    def test_explicit_network_beats_security_network(self):
        self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": "sbx-1"}))
        policy = SecurityPolicy(network=NetworkPolicy(deny_out=["10.0.0.0/8"]))
        Sandbox.create(security=policy, network=NetworkPolicy(allow_out=["example.com"]), **self.kw())
        self.assertEqual(self.last().json["network"]["allow_out"], ["example.com"])
        Sandbox.create(security=policy, allow_internet_access=False, **self.kw())
        self.assertEqual(self.last().json["network"], {"deny_out": ["0.0.0.0/0"]})

    def test_security_as_dict(self):
        self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": "sbx-1"}))
        Sandbox.create(security={"pii": {"enabled": True}, "injection_defense": True}, **self.kw())
        sent = json.loads(self.last().json["security"]["policy_json"])
        self.assertTrue(sent["pii"]["enabled"])
        self.assertTrue(sent["injection_defense"]["enabled"])
        self.assertEqual(sent["audit"], {"enabled": True, "log_request_body": False,
                                         "log_response_body": False, "retention_hours": None})

    def test_create_retries_5xx_with_same_idempotency_key(self):
        self.fake.route(
            "POST",
            "/sandboxes",
            [Reply(503, json={"message": "no orchestrator"}), Reply(502, body=b"bad gateway"),
             Reply(201, json={"sandbox_id": "sbx-9"})],
        )
        sbx = Sandbox.create(**self.kw())
        self.assertEqual(sbx.sandbox_id, "sbx-9")
        self.assertEqual(len(self.reqs), 3)
        keys = {r.headers["idempotency-key"] for r in self.reqs}
        self.assertEqual(len(keys), 1)
        self.assertEqual([r.json for r in self.reqs], [self.reqs[0].json] * 3)

    def test_create_gives_up_after_three_attempts(self):
        self.fake.route("POST", "/sandboxes", Reply(500, json={"message": "boom", "code": "internal"}))
        with self.assertRaises(SandboxException) as cm:
            Sandbox.create(**self.kw())
        self.assertEqual(len(self.reqs), 3)
        self.assertEqual(cm.exception.status, 500)
        self.assertEqual(cm.exception.code, "internal")
        self.assertEqual(cm.exception.message, "boom")

    def test_idempotency_in_progress_honours_retry_after(self):
        self.fake.route(
            "POST",
            "/sandboxes",
            [Reply(409, json={"message": "in progress", "code": "idempotency_in_progress"}, headers={"Retry-After": "0"}),
             Reply(201, json={"sandbox_id": "sbx-2"})],
        )
        sbx = Sandbox.create(**self.kw())
        self.assertEqual(sbx.sandbox_id, "sbx-2")
        self.assertEqual(len(self.reqs), 2)
        self.assertEqual(self.reqs[0].headers["idempotency-key"], self.reqs[1].headers["idempotency-key"])

    def test_create_read_timeout_resends_same_key_then_polls(self):
        from declaw import sandbox as sbxmod

        old = sbxmod.CREATE_REQUEST_TIMEOUT
        sbxmod.CREATE_REQUEST_TIMEOUT = 0.3
        try:
            self.fake.route(
                "POST",
                "/sandboxes",
                [Reply(201, json={"sandbox_id": "sbx-late"}, delay=0.6),  # client gives up on this one
                 Reply(409, json={"message": "in progress", "code": "idempotency_in_progress"}, headers={"Retry-After": "0.2"}),
                 Reply(409, json={"message": "in progress", "code": "idempotency_in_progress"}),
                 Reply(201, json={"sandbox_id": "sbx-late"})],
            )
            sbx = Sandbox.create(**self.kw(request_timeout=0.1))  # explicit: used as is
            self.assertEqual(sbx.sandbox_id, "sbx-late")
        finally:
            sbxmod.CREATE_REQUEST_TIMEOUT = old
        self.assertEqual(len(self.reqs), 4)
        self.assertEqual(len({r.headers["idempotency-key"] for r in self.reqs}), 1)

    def test_create_default_timeout_is_long(self):
        from declaw import connection_config, sandbox as sbxmod

        old = sbxmod.CREATE_REQUEST_TIMEOUT, connection_config.DEFAULT_REQUEST_TIMEOUT
        sbxmod.CREATE_REQUEST_TIMEOUT, connection_config.DEFAULT_REQUEST_TIMEOUT = 2.0, 0.2
        try:
            self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": "sbx-slow"}, delay=0.5))
            # the default request timeout (0.2 s here) is raised to CREATE_REQUEST_TIMEOUT for create only
            sbx = Sandbox.create(**self.kw())
            self.assertEqual(sbx.sandbox_id, "sbx-slow")
            self.assertEqual(sbx.connection_config.request_timeout, 0.2)
        finally:
            sbxmod.CREATE_REQUEST_TIMEOUT, connection_config.DEFAULT_REQUEST_TIMEOUT = old
        self.assertEqual(len(self.reqs), 1)

    def test_other_409_not_retried(self):
        self.fake.route("POST", "/sandboxes", Reply(409, json={"message": "not ready", "code": "template_not_ready"}))
        with self.assertRaises(TemplateException) as cm:
            Sandbox.create(**self.kw())
        self.assertEqual(cm.exception.code, "template_not_ready")
        self.assertEqual(len(self.reqs), 1)

    def test_4xx_not_retried_and_mapped(self):
        cases = [
            (400, InvalidArgumentException),
            (422, InvalidArgumentException),
            (401, AuthenticationException),
            (403, AuthenticationException),
            (402, InsufficientBalanceException),
            (404, NotFoundException),
            (408, TimeoutException),
            (409, ConflictException),
            (413, NotEnoughSpaceException),
            (507, NotEnoughSpaceException),
            (429, RateLimitException),
            (410, SandboxException),
        ]
        for status, cls in cases:
            with self.subTest(status=status):
                self.fake.reset()
                self.fake.route(
                    "POST", "/sandboxes",
                    Reply(status, json={"message": f"m{status}", "code": f"c{status}", "wallet_type": "prepaid"},
                          headers={"Retry-After": "7"}),
                )
                with self.assertRaises(cls) as cm:
                    Sandbox.create(**self.kw())
                e = cm.exception
                self.assertEqual((e.status, e.code, e.message), (status, f"c{status}", f"m{status}"))
                if status < 500:
                    self.assertEqual(len(self.reqs), 1)
                if status == 429:
                    self.assertEqual(e.retry_after, 7.0)
                if status == 402:
                    self.assertEqual(e.wallet_type, "prepaid")

    def test_non_json_error_body(self):
        self.fake.route("GET", "/sandboxes/sbx-1", Reply(404, body=b"page not found"))
        with self.assertRaises(NotFoundException) as cm:
            Sandbox.get_info("sbx-1", **self.kw())
        self.assertEqual(cm.exception.message, "page not found")
        self.assertIsNone(cm.exception.code)

    def test_validation_before_sending(self):
        for kwargs in (
            {"timeout": -1},
            {"timeout": "10"},
            {"template": ""},
            {"metadata": {"a": 1}},
            {"lifecycle": {"on_timeout": "explode"}},
            {"network": {"deny_out": ["example.com"]}},
            {"security": {"pii": {"types": ["phone_number"]}}},
        ):
            with self.subTest(kwargs=kwargs), self.assertRaises((InvalidArgumentException, ValueError)):
                Sandbox.create(**kwargs, **self.kw())
        self.assertEqual(self.reqs, [])

    def test_client_side_errors_are_value_errors(self):
        with self.assertRaises(ValueError) as cm:
            Sandbox.create(timeout=-1, **self.kw())
        self.assertIsInstance(cm.exception, InvalidArgumentException)
        self.assertIsNone(cm.exception.status)
        self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": "sbx-1"}))
        Sandbox.create(timeout=60.0, **self.kw())
        self.assertEqual(self.last().json["timeout"], 60)

    def test_env_configuration(self):
        self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": "sbx-1"}))
        os.environ["DECLAW_API_KEY"] = "env-key"
        os.environ["DECLAW_DOMAIN"] = self.fake.domain
        try:
            Sandbox.create()
        finally:
            del os.environ["DECLAW_API_KEY"], os.environ["DECLAW_DOMAIN"]
        self.assertEqual(self.last().headers["x-api-key"], "env-key")
        self.assertEqual(self.last().headers["authorization"], "Bearer env-key")


class LifecycleTest(FakeServerTest):
    def test_connect_and_get_info(self):
        info = {"sandbox_id": "sbx-1", "template_id": "python", "name": "python", "metadata": {"a": "b"},
                "started_at": "2026-11-27T04:00:00.123456789Z", "end_at": "2026-11-27T04:05:00Z",
                "state": "running", "timeout": 300, "guest_ip": "10.0.0.2"}
        self.fake.route("GET", "/sandboxes/sbx-1", Reply(200, json=info))
        sbx = Sandbox.connect("sbx-1", **self.kw())
        self.assertEqual(sbx.sandbox_id, "sbx-1")
        self.assertEqual(sbx.template_id, "python")
        got = sbx.get_info()
        self.assertIsInstance(got, SandboxInfo)
        self.assertEqual(got.state, "running")
        self.assertEqual(got.metadata, {"a": "b"})
        self.assertEqual(got.started_at.year, 2026)
        self.assertEqual(got.started_at.microsecond, 123456)
        self.assertEqual(got.end_at.minute, 5)
        self.assertEqual(got.timeout, 300)
        self.assertEqual(got.extra["guest_ip"], "10.0.0.2")
        self.assertEqual(Sandbox.get_info("sbx-1", **self.kw()).sandbox_id, "sbx-1")
        self.assertTrue(all(r.method == "GET" and r.path == "/sandboxes/sbx-1" for r in self.reqs))

    def test_connect_with_timeout_sets_it(self):
        self.fake.route("GET", "/sandboxes/sbx-1", Reply(200, json={"sandbox_id": "sbx-1"}))
        self.fake.route("PATCH", "/sandboxes/sbx-1/timeout", Reply(200, json={}))
        Sandbox.connect("sbx-1", timeout=120, **self.kw())
        self.assertEqual(self.last().json, {"timeout": 120})

    def test_connect_missing(self):
        with self.assertRaises(NotFoundException):
            Sandbox.connect("sbx-missing", **self.kw())

    def test_list_query_and_pages(self):
        page1 = {"sandboxes": [{"sandbox_id": "sbx-1", "state": "running"}], "next_token": "t2"}
        page2 = {"sandboxes": [{"sandbox_id": "sbx-2", "state": "paused"}], "next_token": None}

        def answer(rec):
            return Reply(200, json=page2 if rec.query.get("next_token") == ["t2"] else page1)

        self.fake.route("GET", "/sandboxes", answer)
        res = Sandbox.list(query={"metadata": {"team": "a b", "env": "x&y"}, "state": ["running", "paused"]},
                           limit=1, **self.kw())
        r = self.last()
        self.assertEqual(r.query["state"], ["running", "paused"])
        self.assertEqual(r.query["limit"], ["1"])
        self.assertEqual(r.query["metadata"], ["env=x%26y&team=a+b"])
        self.assertNotIn("next_token", r.query)
        self.assertEqual([s.sandbox_id for s in res], ["sbx-1"])
        self.assertEqual(len(res), 1)
        self.assertEqual(res.next_token, "t2")
        self.assertTrue(res.has_next)
        self.assertEqual([s.sandbox_id for s in res.iter_all()], ["sbx-1", "sbx-2"])
        self.assertEqual(self.last().query["next_token"], ["t2"])
        self.assertEqual(self.last().query["state"], ["running", "paused"])

    def test_list_no_query(self):
        self.fake.route("GET", "/sandboxes", Reply(200, json={"sandboxes": []}))
        res = Sandbox.list(**self.kw())
        self.assertEqual(self.last().raw_query, "")
        self.assertEqual(list(res), [])
        self.assertIsNone(res.next_token)
        with self.assertRaises(InvalidArgumentException):
            Sandbox.list(query={"state": ["zombie"]}, **self.kw())

    def test_instance_kill_is_async_by_default(self):
        sbx = self.sandbox()
        self.fake.route("DELETE", "/sandboxes/sbx-1", Reply(202, json={"queued": True}))
        self.assertTrue(sbx.kill())
        r = self.last()
        self.assertEqual((r.method, r.path, r.query), ("DELETE", "/sandboxes/sbx-1", {"async": ["true"]}))
        self.fake.route("DELETE", "/sandboxes/sbx-1", Reply(200, json={"killed": True}))
        self.assertTrue(sbx.kill(wait=True))
        self.assertEqual(self.last().raw_query, "")
        self.fake.route("DELETE", "/sandboxes/sbx-1", Reply(404, json={"message": "gone"}))
        self.assertFalse(sbx.kill())

    def test_class_kill_and_kill_many(self):
        self.fake.route("DELETE", "/sandboxes/sbx-7", Reply(202, json={"queued": True}))
        self.assertTrue(Sandbox.kill("sbx-7", **self.kw()))
        self.assertEqual(self.last().query, {"async": ["true"]})
        self.assertEqual(self.last().headers["x-api-key"], API_KEY)
        self.assertFalse(Sandbox.kill("sbx-nope", **self.kw()))
        results = {"sbx-1": {"queued": True}, "sbx-2": {"error": "not found"}}
        self.fake.route("POST", "/sandboxes/kill-many", Reply(200, json={"results": results}))
        self.assertEqual(Sandbox.kill_many(["sbx-1", "sbx-2"], **self.kw()), results)
        self.assertEqual(self.last().json, {"sandbox_ids": ["sbx-1", "sbx-2"]})
        self.assertEqual(self.last().query, {"async": ["true"]})
        Sandbox.kill_many(["sbx-1"], wait=True, **self.kw())
        self.assertEqual(self.last().raw_query, "")

    def test_set_timeout_status_metrics_pause_resume(self):
        sbx = self.sandbox()
        self.fake.route("PATCH", "/sandboxes/sbx-1/timeout", Reply(200, json={}))
        sbx.set_timeout(600)
        self.assertEqual((self.last().method, self.last().json), ("PATCH", {"timeout": 600}))
        Sandbox.set_timeout("sbx-1", 30, **self.kw())
        self.assertEqual(self.last().json, {"timeout": 30})
        with self.assertRaises(InvalidArgumentException):
            sbx.set_timeout(-5)

        self.fake.route("GET", "/sandboxes/sbx-1/status", Reply(200, json={"is_running": True}))
        self.assertTrue(sbx.is_running())
        self.fake.route("GET", "/sandboxes/sbx-1/status", Reply(404, json={"message": "gone"}))
        self.assertFalse(sbx.is_running())

        sample = {"timestamp": "2026-11-27T04:00:00Z", "cpu_usage_percent": 1.5, "memory_usage_mb": 100,
                  "disk_usage_mb": 20}
        self.fake.route("GET", "/sandboxes/sbx-1/metrics", Reply(200, json=[sample]))
        m = sbx.get_metrics()
        self.assertEqual(m[0].cpu_usage_percent, 1.5)
        self.assertEqual(self.last().raw_query, "")
        self.fake.route("GET", "/sandboxes/sbx-1/metrics", Reply(200, json=sample))
        self.assertEqual(len(Sandbox.get_metrics("sbx-1", **self.kw())), 1)

        self.fake.route("POST", "/sandboxes/sbx-1/pause", Reply(200, json={}))
        sbx.pause()
        self.assertEqual(self.last().path, "/sandboxes/sbx-1/pause")
        self.fake.route("POST", "/sandboxes/sbx-1/pause", Reply(409, json={"message": "cannot pause"}))
        with self.assertRaises(ConflictException):
            sbx.pause()
        self.fake.route("POST", "/sandboxes/sbx-1/resume", Reply(200, json={}))
        sbx.resume()
        self.assertEqual((self.last().path, self.last().json), ("/sandboxes/sbx-1/resume", {}))

    def test_context_manager_kills(self):
        self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": "sbx-5"}))
        self.fake.route("DELETE", "/sandboxes/sbx-5", Reply(202, json={"queued": True}))
        with Sandbox.create(**self.kw()) as sbx:
            sbx.close()
        self.assertEqual((self.last().method, self.last().path), ("DELETE", "/sandboxes/sbx-5"))

    def test_audit_events(self):
        sbx = self.sandbox()
        self.fake.route("GET", "/sandboxes/sbx-1/audit", Reply(200, json={"events": [
            {"timestamp": "2026-11-27T04:00:00Z", "type": "egress_blocked", "url": "http://x", "rule": "deny"}]}))
        ev = sbx.audit_events(limit=10, type="egress_blocked")
        self.assertEqual(self.last().query, {"limit": ["10"], "type": ["egress_blocked"]})
        self.assertEqual(ev[0].type, "egress_blocked")
        self.assertEqual(ev[0].extra, {"rule": "deny"})

    def test_urls(self):
        sbx = self.sandbox()
        base = f"http://{self.fake.domain}/sandboxes/sbx-1"
        self.assertEqual(sbx.envd_api_url, base)
        self.assertEqual(sbx.get_host(8080), base + "/ports/8080")
        self.assertEqual(sbx.get_mcp_url(), base + "/ports/50005/mcp")
        self.assertEqual(sbx.download_url("/tmp/a b.txt", user="root"),
                         base + "/files/raw?path=/tmp/a%20b.txt&username=root")

    def test_port_token(self):
        sbx = self.sandbox()
        path = "/sandboxes/sbx-1/ports/8080/?declaw_port_token=v1.2.abc"
        self.fake.route("POST", "/sandboxes/sbx-1/port-tokens", Reply(201, json={
            "token": "v1.2.abc", "port": 8080, "expires_at": "2026-12-08T04:00:00Z", "path": path}))
        tok = sbx.create_port_token(8080, ttl_seconds=60)
        self.assertEqual(self.last().json, {"port": 8080, "ttl_seconds": 60})
        self.assertEqual(tok["url"], f"http://{self.fake.domain}" + path)
        self.assertEqual(sbx.get_signed_host(8080), f"http://{self.fake.domain}" + path)
        self.assertEqual(self.last().json, {"port": 8080})

    def test_sandbox_id_is_path_escaped(self):
        self.fake.route("GET", "/sandboxes/.*", Reply(200, json={"sandbox_id": "x"}))
        Sandbox.get_info("a/../b", **self.kw())
        self.assertEqual(self.last().path, "/sandboxes/a%2F..%2Fb")


if __name__ == "__main__":
    unittest.main()
