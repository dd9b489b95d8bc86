"""In-tree PEP 517 build backend for the declaw SDK (standard library only).

Why not setuptools: building a wheel with the setuptools found on our
machines (65.x) also needs the separate ``wheel`` package, and no package
index is reachable there, so ``pip install ./sdk/python`` could not work
offline. This backend needs nothing beyond Python itself, so plain
``pip install ./sdk/python`` and ``pip install --no-build-isolation``
both work offline. It builds a pure-Python ``py3-none-any`` wheel, an sdist
and a PEP 660 editable wheel.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile
from typing import Dict, List, Optional, Tuple

NAME = "declaw"
SUMMARY = "Python SDK for Declaw, a secure runtime for AI agents"
REQUIRES_PYTHON = ">=3.9"
LICENSE = "Apache-2.0"
PACKAGE = "declaw"
TAG = "py3-none-any"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SDIST_ITEMS = ("pyproject.toml", "README.md", "_build", "declaw", "examples", "tests")


def _version() -> str:
    with open(os.path.join(ROOT, PACKAGE, "_version.py"), encoding="utf-8") as f:
        m = re.search(r'__version__\s*=\s*"([^"]+)"', f.read())
    if not m:
        raise RuntimeError("cannot find __version__ in declaw/_version.py")
    return m.group(1)


def _dist_info() -> str:
    return f"{NAME}-{_version()}.dist-info"


def _metadata() -> bytes:
    readme_path = os.path.join(ROOT, "README.md")
    readme = ""
    if os.path.exists(readme_path):
        with open(readme_path, encoding="utf-8") as f:
            readme = f.read()
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {NAME}",
        f"Version: {_version()}",
        f"Summary: {SUMMARY}",
        f"License: {LICENSE}",
        f"Requires-Python: {REQUIRES_PYTHON}",
        "Classifier: Programming Language :: Python :: 3",
        "Classifier: Programming Language :: Python :: 3 :: Only",
        "Classifier: Typing :: Typed",
        "Description-Content-Type: text/markdown",
        "",
        readme,
    ]
    return "\n".join(lines).encode("utf-8")


def _wheel_file() -> bytes:
    return (
        "Wheel-Version: 1.0\n"
        "Generator: declaw_build\n"
        "Root-Is-Purelib: true\n"
        f"Tag: {TAG}\n"
    ).encode("utf-8")


def _package_files() -> List[Tuple[str, str]]:
    """(archive name, absolute path) of every file of the package."""
    out = []
    pkg = os.path.join(ROOT, PACKAGE)
    for dirpath, dirnames, filenames in os.walk(pkg):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fn in sorted(filenames):
            if fn.endswith((".pyc", ".pyo")):
                continue
            full = os.path.join(dirpath, fn)
            out.append((os.path.relpath(full, ROOT).replace(os.sep, "/"), full))
    return out


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return f"{name},sha256={digest},{len(data)}"


def _write_wheel(wheel_directory: str, files: Dict[str, bytes]) -> str:
    name = f"{NAME}-{_version()}-{TAG}.whl"
    dist_info = _dist_info()
    files = dict(files)
    files[f"{dist_info}/METADATA"] = _metadata()
    files[f"{dist_info}/WHEEL"] = _wheel_file()
    files[f"{dist_info}/top_level.txt"] = f"{PACKAGE}\n".encode()
    record_name = f"{dist_info}/RECORD"
    record = [_record_line(n, d) for n, d in files.items()] + [f"{record_name},,"]
    files[record_name] = ("\n".join(record) + "\n").encode("utf-8")
    os.makedirs(wheel_directory, exist_ok=True)
    stamp = (2020, 1, 1, 0, 0, 0)
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as zf:
        for n, d in files.items():
            info = zipfile.ZipInfo(n, date_time=stamp)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, d)
    return name


# ------------------------------------------------------------- PEP 517 hooks


def get_requires_for_build_wheel(config_settings: Optional[dict] = None) -> List[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[dict] = None) -> List[str]:
    return []


def get_requires_for_build_editable(config_settings: Optional[dict] = None) -> List[str]:
    return []


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: Optional[dict] = None) -> str:
    dist_info = _dist_info()
    path = os.path.join(metadata_directory, dist_info)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "METADATA"), "wb") as f:
        f.write(_metadata())
    with open(os.path.join(path, "WHEEL"), "wb") as f:
        f.write(_wheel_file())
    return dist_info


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(
    wheel_directory: str, config_settings: Optional[dict] = None, metadata_directory: Optional[str] = None
) -> str:
    files = {}
    for arc, full in _package_files():
        with open(full, "rb") as f:
            files[arc] = f.read()
    return _write_wheel(wheel_directory, files)


def build_editable(
    wheel_directory: str, config_settings: Optional[dict] = None, metadata_directory: Optional[str] = None
) -> str:
    pth = f"__editable__.{NAME}-{_version()}.pth"
    return _write_wheel(wheel_directory, {pth: (ROOT + "\n").encode("utf-8")})


def build_sdist(sdist_directory: str, config_settings: Optional[dict] = None) -> str:
    base = f"{NAME}-{_version()}"
    name = f"{base}.tar.gz"
    os.makedirs(sdist_directory, exist_ok=True)
    mtime = int(time.time())
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz", format=tarfile.PAX_FORMAT) as tf:
        meta = _metadata()
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        info.size, info.mtime, info.mode = len(meta), mtime, 0o644
        tf.addfile(info, io.BytesIO(meta))
        for item in SDIST_ITEMS:
            full = os.path.join(ROOT, item)
            if os.path.exists(full):
                tf.add(full, arcname=f"{base}/{item}", filter=_sdist_filter)
    return name


def _sdist_filter(info: tarfile.TarInfo) -> Optional[tarfile.TarInfo]:
    if "__pycache__" in info.name or info.name.endswith((".pyc", ".pyo")):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
