import os
import sys
import tarfile
import tempfile
import unittest
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "_build"))
sys.path.insert(0, ROOT)

import declaw_build  # noqa: E402

import declaw  # noqa: E402


class PackagingTest(unittest.TestCase):
    def test_version_matches_pyproject(self):
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            self.skipTest("tomllib not available")
        with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
            project = tomllib.load(f)
        self.assertEqual(project["project"]["version"], declaw.__version__)
        self.assertEqual(project["build-system"]["requires"], [])

    def test_wheel_and_sdist(self):
        with tempfile.TemporaryDirectory() as d:
            name = declaw_build.build_wheel(d)
            self.assertEqual(name, f"declaw-{declaw.__version__}-py3-none-any.whl")
            with zipfile.ZipFile(os.path.join(d, name)) as zf:
                names = set(zf.namelist())
                self.assertIn("declaw/__init__.py", names)
                self.assertIn("declaw/py.typed", names)
                self.assertFalse(any("__pycache__" in n for n in names))
                dist = f"declaw-{declaw.__version__}.dist-info"
                record = zf.read(f"{dist}/RECORD").decode()
                self.assertEqual(len(record.strip().splitlines()), len(names))
                self.assertIn("Requires-Python: >=3.9", zf.read(f"{dist}/METADATA").decode())
            sdist = declaw_build.build_sdist(d)
            with tarfile.open(os.path.join(d, sdist)) as tf:
                members = tf.getnames()
            base = f"declaw-{declaw.__version__}"
            self.assertIn(f"{base}/PKG-INFO", members)
            self.assertIn(f"{base}/pyproject.toml", members)
            self.assertIn(f"{base}/_build/declaw_build.py", members)
            self.assertIn(f"{base}/declaw/sandbox.py", members)


if __name__ == "__main__":
    unittest.main()
