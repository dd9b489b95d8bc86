import io
import os
import tempfile
import unittest

from helpers import FakeServerTest
from fake_server import Reply

from declaw import EntryInfo, FileUploadException, NotFoundException, NotEnoughSpaceException, WriteEntry, WriteInfo

ODD_PATH = "/tmp/dir with space/ü&x=1?#%.txt"


class FilesTest(FakeServerTest):
    def test_read_text_bytes_stream(self):
        sbx = self.sandbox()
        self.fake.route("GET", "/sandboxes/sbx-1/files", Reply(200, body="héllo\n".encode()))
        self.assertEqual(sbx.files.read(ODD_PATH), "héllo\n")
        r = self.last()
        self.assertEqual(r.query, {"path": [ODD_PATH]})  # no username unless given
        self.assertNotIn("+", r.raw_query)
        self.assertIn("path=/tmp/dir%20with%20space/%C3%BC%26x%3D1%3F%23%25.txt", r.raw_query)

        blob = bytes(range(256)) * 1000
        self.fake.route("GET", "/sandboxes/sbx-1/files/raw", Reply(200, body=blob))
        self.assertEqual(sbx.files.read("/bin/x", format="bytes", user="user"), blob)
        self.assertEqual(self.last().query, {"path": ["/bin/x"], "username": ["user"]})
        chunks = list(sbx.files.read("/bin/x", format="stream"))
        self.assertEqual(b"".join(chunks), blob)
        with self.assertRaises(ValueError):
            sbx.files.read("/x", format="json")

    def test_connection_reused_after_stream_read(self):
        # A Content-Length body read to its end through format="stream" must
        # leave the pooled connection usable: the next request (a POST that is
        # never retried) goes out once and succeeds.
        sbx = self.sandbox()
        self.fake.route("GET", "/sandboxes/sbx-1/files/raw", Reply(200, body=b"x" * 300000))
        self.fake.route("POST", "/sandboxes/sbx-1/commands",
                        Reply(200, json={"stdout": "", "stderr": "", "exit_code": 0}))
        for _ in range(3):
            self.assertEqual(b"".join(sbx.files.read("/f", format="stream")), b"x" * 300000)
            self.assertEqual(sbx.commands.run("true").exit_code, 0)
        self.assertEqual(len([r for r in self.reqs if r.method == "POST"]), 3)
        clients = {r.client for r in self.reqs}
        self.assertEqual(len(clients), 1, clients)  # one keep-alive connection throughout

    def test_read_missing(self):
        sbx = self.sandbox()
        self.fake.route("GET", "/sandboxes/sbx-1/files", Reply(404, json={"message": "no such file", "code": "not_found"}))
        with self.assertRaises(NotFoundException):
            sbx.files.read("/nope")
        self.fake.route("GET", "/sandboxes/sbx-1/files/raw", Reply(404, json={"message": "no such file"}))
        with self.assertRaises(NotFoundException):
            sbx.files.read("/nope", format="stream")

    def test_write_text(self):
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/files", Reply(200, json={"path": "/tmp/a.py", "size": 6}))
        info = sbx.files.write("/tmp/a.py", "print(1)"[:6])
        self.assertEqual(info, WriteInfo("/tmp/a.py", 6))
        r = self.last()
        self.assertEqual(r.json, {"path": "/tmp/a.py", "data": "print("})
        self.assertEqual(r.raw_query, "")
        sbx.files.write("/tmp/a.py", "x", user="user")
        self.assertEqual(self.last().json, {"path": "/tmp/a.py", "data": "x", "username": "user"})

    def test_write_bytes_raw(self):
        sbx = self.sandbox()
        self.fake.route("PUT", "/sandboxes/sbx-1/files/raw", Reply(200, json={"path": "/b", "size": 3}))
        data = b"\x00\xff\x80"
        self.assertEqual(sbx.files.write(ODD_PATH, data), WriteInfo("/b", 3))
        r = self.last()
        self.assertEqual(r.body, data)
        self.assertEqual(r.query, {"path": [ODD_PATH]})
        self.assertEqual(r.headers["content-type"], "application/octet-stream")
        self.assertEqual(r.headers["content-length"], "3")

    def test_write_file_objects_streamed(self):
        sbx = self.sandbox()
        self.fake.route("PUT", "/sandboxes/sbx-1/files/raw", lambda rec: Reply(200, json={"path": "/f", "size": len(rec.body)}))
        blob = os.urandom(3 * 1024 * 1024 + 17)
        # seekable binary file: Content-Length, exact bytes, from the current position
        f = io.BytesIO(b"skip" + blob)
        f.seek(4)
        self.assertEqual(sbx.files.write("/f", f).size, len(blob))
        r = self.last()
        self.assertEqual(r.body, blob)
        self.assertEqual(r.headers["content-length"], str(len(blob)))
        # a real file on disk
        with tempfile.NamedTemporaryFile() as tf:
            tf.write(blob)
            tf.flush()
            with open(tf.name, "rb") as fh:
                sbx.files.write("/f", fh)
        self.assertEqual(self.last().body, blob)

        # non-seekable: chunked transfer encoding
        class Pipe(io.RawIOBase):
            def __init__(self, data):
                self._b = io.BytesIO(data)

            def readable(self):
                return True

            def read(self, n=-1):
                return self._b.read(min(n, 1000) if n and n > 0 else n)

        sbx.files.write("/f", Pipe(blob[:100000]))
        r = self.last()
        self.assertEqual(r.headers.get("transfer-encoding"), "chunked")
        self.assertEqual(r.body, blob[:100000])
        # text file object: encoded as UTF-8
        sbx.files.write("/f", io.StringIO("ünï\n"))
        self.assertEqual(self.last().body, "ünï\n".encode())

    def test_upload_errors(self):
        sbx = self.sandbox()
        self.fake.route("PUT", "/sandboxes/sbx-1/files/raw", Reply(413, json={"message": "too large"}))
        with self.assertRaises(NotEnoughSpaceException):
            sbx.files.write("/f", b"x")
        self.fake.route("PUT", "/sandboxes/sbx-1/files/raw", Reply(500, json={"message": "disk error"}))
        with self.assertRaises(FileUploadException) as cm:
            sbx.files.write("/f", io.BytesIO(b"abc"))
        self.assertEqual(cm.exception.status, 500)
        self.assertEqual(len(self.reqs), 1 + 3)  # PUT with a rewindable body is retried
        self.assertTrue(all(r.body == b"abc" for r in self.reqs[1:]))

    def test_write_files_batch_and_raw(self):
        sbx = self.sandbox()
        self.fake.route("POST", "/sandboxes/sbx-1/files/batch",
                        Reply(200, json=[{"path": "/a", "size": 1}, {"path": "/c", "size": 2}]))
        self.fake.route("PUT", "/sandboxes/sbx-1/files/raw", Reply(200, json={"path": "/b", "size": 2}))
        res = sbx.files.write_files([{"path": "/a", "data": "1"}, WriteEntry("/b", b"\x00\x01"), {"path": "/c", "data": "22"}],
                                    user="user")
        self.assertEqual(res, [WriteInfo("/a", 1), WriteInfo("/b", 2), WriteInfo("/c", 2)])
        batch = [r for r in self.reqs if r.path.endswith("/batch")][0]
        self.assertEqual(batch.json, {"files": [{"path": "/a", "data": "1"}, {"path": "/c", "data": "22"}], "username": "user"})
        raw = [r for r in self.reqs if r.method == "PUT"][0]
        self.assertEqual((raw.body, raw.query), (b"\x00\x01", {"path": ["/b"], "username": ["user"]}))

    def test_list_exists_info(self):
        sbx = self.sandbox()
        entries = [
            {"name": "a.txt", "path": "/tmp/a.txt", "type": "file", "size": 3, "mode": 420, "permissions": "-rw-r--r--",
             "owner": "root", "group": "root", "modified_time": "2026-11-27T04:00:00Z"},
            {"name": "d", "path": "/tmp/d", "type": "dir", "size": 4096},
        ]
        self.fake.route("GET", "/sandboxes/sbx-1/files/list", Reply(200, json=entries))
        got = sbx.files.list("/tmp", depth=2)
        self.assertEqual(self.last().query, {"path": ["/tmp"], "depth": ["2"]})
        self.assertIsInstance(got[0], EntryInfo)
        self.assertEqual((got[0].name, got[0].type, got[0].size, got[0].mode, got[0].owner), ("a.txt", "file", 3, 420, "root"))
        self.assertTrue(got[1].is_dir)
        self.assertEqual(got[0].modified_time.year, 2026)
        sbx.files.list("/tmp")
        self.assertEqual(self.last().query["depth"], ["1"])
        with self.assertRaises(ValueError):
            sbx.files.list("/tmp", depth=0)

        self.fake.route("GET", "/sandboxes/sbx-1/files/exists", Reply(200, json={"exists": True}))
        self.assertTrue(sbx.files.exists("/tmp/a.txt"))
        self.assertEqual(self.last().query, {"path": ["/tmp/a.txt"]})
        self.fake.route("GET", "/sandboxes/sbx-1/files/exists", Reply(200, json={"exists": False}))
        self.assertFalse(sbx.files.exists("/x"))

        self.fake.route("GET", "/sandboxes/sbx-1/files/info", Reply(200, json=entries[1]))
        self.assertEqual(sbx.files.get_info("/tmp/d").type, "dir")

    def test_remove_rename_mkdir(self):
        sbx = self.sandbox()
        self.fake.route("DELETE", "/sandboxes/sbx-1/files", Reply(200, json={}))
        sbx.files.remove("/tmp/x y")
        self.assertEqual((self.last().method, self.last().query), ("DELETE", {"path": ["/tmp/x y"]}))

        self.fake.route("PATCH", "/sandboxes/sbx-1/files", Reply(200, json={"name": "b", "path": "/tmp/b", "type": "file", "size": 1}))
        e = sbx.files.rename("/tmp/a", "/tmp/b")
        self.assertEqual(e.path, "/tmp/b")
        self.assertEqual(self.last().json, {"old_path": "/tmp/a", "new_path": "/tmp/b"})

        self.fake.route("POST", "/sandboxes/sbx-1/files/mkdir", Reply(200, json={"created": True}))
        self.assertTrue(sbx.files.make_dir("/tmp/new"))
        self.assertEqual(self.last().json, {"path": "/tmp/new"})
        self.fake.route("POST", "/sandboxes/sbx-1/files/mkdir", Reply(200, json={"created": False}))
        self.assertFalse(sbx.files.make_dir("/tmp/new", user="user"))
        self.assertEqual(self.last().json, {"path": "/tmp/new", "username": "user"})

    def test_bad_paths(self):
        sbx = self.sandbox()
        for bad in ("", None, "a\x00b"):
            with self.subTest(path=bad), self.assertRaises(ValueError):
                sbx.files.read(bad)
        with self.assertRaises(TypeError):
            sbx.files.write("/x", 123)
        self.assertEqual(self.reqs, [])


if __name__ == "__main__":
    unittest.main()
