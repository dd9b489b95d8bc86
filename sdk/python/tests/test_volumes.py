import gzip
import io
import os
import tarfile
import tempfile
import unittest

from helpers import FakeServerTest
from fake_server import Reply

from declaw import ConflictException, NotFoundException, Sandbox, Volume, VolumeAttachment, Volumes

VOL = {"volume_id": "vol-0a1b2c3d4e5f6071", "owner_id": "team_1", "name": "ds", "blob_key": "volumes/x",
       "size_bytes": 123, "content_type": "application/gzip", "created_at": "2026-12-08T03:00:00Z",
       "backend": "tarball", "quota_bytes": 524288000, "files": 2}


class VolumesTest(FakeServerTest):
    def test_create_from_directory(self):
        self.fake.route("POST", "/volumes", Reply(201, json=VOL))
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "a.txt"), "w") as f:
                f.write("hello")
            v = Volumes.create("ds", d, **self.kw())
        r = self.last()
        self.assertEqual((r.method, r.path, r.query), ("POST", "/volumes", {"name": ["ds"]}))
        self.assertEqual(r.headers["content-type"], "application/gzip")
        with tarfile.open(fileobj=io.BytesIO(r.body), mode="r:gz") as tar:
            self.assertIn("./a.txt", tar.getnames())
        self.assertIsInstance(v, Volume)
        self.assertEqual((v.volume_id, v.size_bytes, v.backend, v.files), (VOL["volume_id"], 123, "tarball", 2))

    def test_list_get_download_delete(self):
        vid = VOL["volume_id"]
        self.fake.route("GET", "/volumes", Reply(200, json={"volumes": [VOL]}))
        self.assertEqual([v.volume_id for v in Volumes.list(**self.kw())], [vid])
        self.fake.route("GET", "/volumes/" + vid, Reply(200, json=VOL))
        self.assertEqual(Volumes.get(vid, **self.kw()).name, "ds")
        blob = gzip.compress(b"x")
        self.fake.route("GET", "/volumes/" + vid + "/download", Reply(200, body=blob, headers={"Content-Type": "application/gzip"}))
        self.assertEqual(Volumes.download(vid, **self.kw()), blob)
        self.fake.route("DELETE", "/volumes/" + vid, Reply(409, json={"message": "attached", "code": "volume_in_use"}))
        with self.assertRaises(ConflictException):
            Volumes.delete(vid, **self.kw())
        self.fake.route("GET", "/volumes/vol-none", Reply(404, json={"message": "no", "code": "volume_not_found"}))
        with self.assertRaises(NotFoundException):
            Volumes.get("vol-none", **self.kw())

    def test_attach_at_create(self):
        self.fake.route("POST", "/sandboxes", Reply(201, json={"sandbox_id": "sbx-1", "envd_access_token": "tok"}))
        v = Volume.from_dict(VOL)
        Sandbox.create(volumes=[v.attach("/data"), VolumeAttachment("vol-2", "/ro", mode="mount-ro", subpath="a"),
                                {"volume_id": "vol-3", "mount_path": "/x"}], **self.kw())
        self.assertEqual(self.last().json["volumes"], [
            {"volume_id": VOL["volume_id"], "mount_path": "/data"},
            {"volume_id": "vol-2", "mount_path": "/ro", "mode": "mount-ro", "subpath": "a"},
            {"volume_id": "vol-3", "mount_path": "/x"}])


if __name__ == "__main__":
    unittest.main()
