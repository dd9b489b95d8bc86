import asyncio
import io
import json
import os
import tarfile
import tempfile
import unittest

from helpers import FakeServerTest
from fake_server import Reply

from declaw import AsyncTemplate, BuildException, ConflictException, InvalidArgumentException, Template, TemplateBase


def sse(*events):
    return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events]


BUILDING = {"build_id": "bld-1", "status": "building", "template_id": "tpl-1", "alias": "app", "logs": []}


class TemplateBuilderTest(unittest.TestCase):
    def test_to_dict(self):
        tpl = (Template().from_base_image("python:3.12-slim").apt_install("curl", "jq").run_cmd(["pip", "install", "x"])
               .run_cmd("echo hi").set_envs({"A": "1"}).set_workdir("/app").set_user("user")
               .copy("app.py", "/app/", mode=0o755).set_start_cmd("python app.py", ready_check=8000, timeout=30))
        self.assertEqual(tpl.to_dict(), {
            "base_image": "python:3.12-slim", "run_cmds": ["pip install x", "echo hi"], "envs": {"A": "1"},
            "apt_packages": ["curl", "jq"], "copies": [{"src": "app.py", "dst": "/app/", "mode": 0o755}],
            "workdir": "/app", "user": "user", "start_cmd": "python app.py", "ready_check": {"port": 8000, "timeout": 30},
        })

    def test_ready_checks(self):
        for given, want in [("curl -f localhost", {"cmd": "curl -f localhost"}), (80, {"port": 80}),
                            ("http://localhost:80/health", {"url": "http://localhost:80/health"}),
                            ({"command": "true"}, {"cmd": "true"})]:
            self.assertEqual(TemplateBase().set_start_cmd("x", ready_check=given).to_dict()["ready_check"], want)
        with self.assertRaises(InvalidArgumentException):
            TemplateBase().set_start_cmd("x", ready_check={"port": 1, "cmd": "true"})

    def test_dockerfile_overrides(self):
        tpl = TemplateBase().run_cmd("ignored").from_dockerfile("FROM base\nRUN true\n")
        self.assertEqual(tpl.to_dict(), {"dockerfile": "FROM base\nRUN true\n"})
        with self.assertRaises(InvalidArgumentException):
            TemplateBase().from_dockerfile("FROM base\n#" + "x" * (64 << 10))

    def test_copy_outside_context(self):
        with self.assertRaises(InvalidArgumentException):
            TemplateBase().copy("../secret", "/x").to_dict()


class TemplateAPITest(FakeServerTest):
    def test_build_streams_logs(self):
        self.fake.route("POST", "/templates/build", Reply(202, json=BUILDING))
        self.fake.route("GET", "/templates/builds/bld-1/logs", Reply(200, headers={"Content-Type": "text/event-stream"}, sse=sse(
            ("log", {"offset": 0, "line": "Step 1/2 : FROM base"}),
            ("log", {"offset": 1, "line": "Step 2/2 : RUN echo hi"}),
            ("status", {"build_id": "bld-1", "status": "completed", "template_id": "tpl-1", "alias": "app"}),
        )))
        lines = []
        info = Template.build(Template().run_cmd("echo hi"), alias="app", cpu_count=2, on_build_logs=lines.append, **self.kw())
        self.assertEqual((info.status, info.template_id), ("completed", "tpl-1"))
        self.assertEqual(lines, ["Step 1/2 : FROM base", "Step 2/2 : RUN echo hi"])
        post = self.reqs[0]
        self.assertEqual(post.json, {"template": {"base_image": "base", "run_cmds": ["echo hi"]}, "background": True,
                                     "alias": "app", "cpu_count": 2})
        self.assertEqual(self.reqs[1].query.get("follow"), ["true"])

    def test_build_failure_raises(self):
        self.fake.route("POST", "/templates/build", Reply(202, json=BUILDING))
        self.fake.route("GET", "/templates/builds/bld-1/logs", Reply(200, headers={"Content-Type": "text/event-stream"}, sse=sse(
            ("log", {"offset": 0, "line": "oops"}),
            ("status", {"build_id": "bld-1", "status": "failed", "reason": "RUN false: exit code 1", "step": "RUN false"}),
        )))
        with self.assertRaises(BuildException) as cm:
            Template.build(Template().run_cmd("false"), alias="app", **self.kw())
        self.assertEqual(cm.exception.step, "RUN false")
        self.assertEqual(cm.exception.logs, ["oops"])
        self.assertIn("exit code 1", str(cm.exception))

    def test_copy_uploads_context(self):
        self.fake.route("POST", "/templates/build", Reply(202, json=BUILDING))
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "app.py"), "w") as f:
                f.write("print('hi')\n")
            Template.build_in_background(Template().copy("app.py", "/app/app.py"), alias="app", context_dir=d, **self.kw())
        r = self.last()
        self.assertTrue(r.headers["content-type"].startswith("multipart/form-data; boundary="))
        boundary = r.headers["content-type"].split("boundary=")[1].encode()
        parts = r.body.split(b"--" + boundary)
        req = json.loads(parts[1].split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0])
        self.assertEqual(req["template"]["copies"], [{"src": "app.py", "dst": "/app/app.py"}])
        ctx = parts[2].split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
        with tarfile.open(fileobj=io.BytesIO(ctx), mode="r:gz") as tar:
            self.assertEqual(tar.extractfile("app.py").read(), b"print('hi')\n")

    def test_status_list_delete(self):
        self.fake.route("GET", "/templates/builds/bld-1", Reply(200, json=dict(BUILDING, logs=["a", "b"], next_offset=3)))
        st = Template.get_build_status("bld-1", offset=1, **self.kw())
        self.assertEqual((st.logs, st.next_offset, self.last().query["offset"]), (["a", "b"], 3, ["1"]))
        self.fake.route("GET", "/templates", Reply(200, json={"templates": [{"template_id": "tpl-1", "alias": "app", "in_use": 2}]}))
        ts = Template.list(**self.kw())
        self.assertEqual((ts[0].template_id, ts[0].alias, ts[0].in_use), ("tpl-1", "app", 2))
        self.fake.route("DELETE", "/templates/app", Reply(409, json={"message": "in use", "code": "template_in_use"}))
        with self.assertRaises(ConflictException):
            Template.delete("app", **self.kw())
        self.fake.route("DELETE", "/templates/app", Reply(204))
        Template.delete("app", force=True, **self.kw())
        self.assertEqual(self.last().query, {"force": ["true"]})

    def test_async_build(self):
        self.fake.route("POST", "/templates/build", Reply(202, json=BUILDING))
        self.fake.route("GET", "/templates/builds/bld-1/logs", Reply(200, headers={"Content-Type": "text/event-stream"}, sse=sse(
            ("log", {"offset": 0, "line": "one"}),
            ("status", {"build_id": "bld-1", "status": "completed", "template_id": "tpl-1"}),
        )))
        got = []

        async def on_log(line):
            got.append(line)

        async def main():
            return await AsyncTemplate.build(AsyncTemplate().run_cmd("true"), alias="app", on_build_logs=on_log, **self.kw())

        info = asyncio.run(main())
        self.assertEqual((info.status, got), ("completed", ["one"]))


if __name__ == "__main__":
    unittest.main()
