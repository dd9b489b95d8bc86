"""Runs examples/secured_vs_unsecured.py (the seed example) against the fake server."""

import json
import os
import re
import subprocess
import sys
import unittest

from helpers import API_KEY, FakeServerTest
from fake_server import Reply

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLE = os.path.join(ROOT, "examples", "secured_vs_unsecured.py")
# shared/ sits beside the checkout (CI) or at /work/shared (development machines).
SEED_CANDIDATES = (
    os.path.join(ROOT, "..", "..", "..", "shared", "seed", "secured-vs-unsecured.md"),
    "/work/shared/seed/secured-vs-unsecured.md",
)
SEED = next((p for p in SEED_CANDIDATES if os.path.exists(p)), SEED_CANDIDATES[-1])


class SeedExampleTest(FakeServerTest):
    def _serve(self):
        ids = iter(["sbx-unsecured", "sbx-secured"])
        self.fake.route("POST", "/sandboxes", lambda rec: Reply(201, json={"sandbox_id": next(ids)}))
        self.fake.route("POST", "/sandboxes/[^/]+/files", lambda rec: Reply(200, json={"path": rec.json["path"], "size": len(rec.json["data"].encode())}))
        self.fake.route("POST", "/sandboxes/[^/]+/commands",
                        lambda rec: Reply(200, json={"pid": 1, "stdout": f"out of {rec.path.split('/')[2]}\n", "stderr": "", "exit_code": 0}))
        self.fake.route("DELETE", "/sandboxes/[^/]+", Reply(202, json={"queued": True}))

    def _run(self, **env):
        full = dict(os.environ, DECLAW_API_KEY=API_KEY, DECLAW_DOMAIN=self.fake.domain,
                    PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
        full.pop("DECLAW_API_URL", None)
        return subprocess.run([sys.executable, EXAMPLE], env=full, capture_output=True, text=True, timeout=60)

    def test_runs_and_prints_like_the_seed(self):
        self._serve()
        p = self._run(DECLAW_SEED_TARGET_1="198.51.100.7", DECLAW_SEED_TARGET_2="203.0.113.9")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(
            p.stdout,
            "--- UNSECURED Sandbox ---\nout of sbx-unsecured\n\n--- SECURED Sandbox ---\nout of sbx-secured\n\n",
        )
        creates = [r for r in self.reqs if r.path == "/sandboxes"]
        self.assertEqual(creates[0].json, {"template": "python", "timeout": 300, "secure": True})
        secured = creates[1].json
        self.assertEqual(secured["network"], {"deny_out": ["0.0.0.0/0"]})
        policy = json.loads(secured["security"]["policy_json"])
        self.assertEqual(policy["pii"]["types"], ["email", "ssn", "credit_card", "api_key"])
        self.assertEqual(policy["injection_defense"]["action"], "block")
        self.assertEqual(policy["audit"]["log_response_body"], True)

        writes = [r for r in self.reqs if r.path.endswith("/files")]
        self.assertEqual(len(writes), 2)
        script = writes[0].json["data"]
        self.assertEqual(writes[0].json["path"], "/tmp/untrusted.py")
        self.assertEqual(script, writes[1].json["data"])
        self.assertIn('s.connect(("198.51.100.7", 80))', script)
        self.assertIn('s.connect(("203.0.113.9", 80))', script)
        self.assertNotIn("1.1.1.1", script)
        self.assertNotIn("93.184.216.34", script)

        runs = [r for r in self.reqs if r.path.endswith("/commands")]
        self.assertEqual([r.json for r in runs], [{"cmd": "python3 /tmp/untrusted.py", "background": False, "timeout": 20}] * 2)
        kills = [(r.path, r.raw_query) for r in self.reqs if r.method == "DELETE"]
        self.assertEqual(kills, [("/sandboxes/sbx-unsecured", "async=true"), ("/sandboxes/sbx-secured", "async=true")])

    def test_script_is_the_seed_verbatim(self):
        self._serve()
        p = self._run()
        self.assertEqual(p.returncode, 0, p.stderr)
        script = [r for r in self.reqs if r.path.endswith("/files")][0].json["data"]
        if os.path.exists(SEED):
            with open(SEED, encoding="utf-8") as f:
                seed = f.read()
            m = re.search(r'UNTRUSTED_SCRIPT = """\\\n(.*?)"""\n', seed, re.S)
            expected = m.group(1).replace("\\\\", "\\")
            self.assertEqual(script, expected)
        self.assertIn('s.connect(("1.1.1.1", 80))', script)
        self.assertIn('s.connect(("93.184.216.34", 80))', script)
        self.assertIn('split("\\n")', script)


if __name__ == "__main__":
    unittest.main()
