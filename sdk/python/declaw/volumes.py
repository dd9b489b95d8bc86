"""Volumes: team-owned tarballs that outlive sandboxes.

    from declaw import Sandbox, Volumes, VolumeAttachment

    vol = Volumes.create("dataset", "./data")          # a path is packed as tar.gz
    sbx = Sandbox.create(volumes=[vol.attach("/home/user/data")])

The official SDK's names and wire format: ``POST /volumes?name=`` with a
gzip tar body, ``GET /volumes``, ``GET /volumes/{id}``,
``GET /volumes/{id}/download``, ``DELETE /volumes/{id}``. Attached with
mode ``copy`` (the default) a volume is unpacked into the sandbox at create;
only regular files and directories are kept (links and devices are dropped
on upload, and a path escaping the volume refuses the upload). Live mounts
(``mount``, ``mount-ro``) are not implemented by this server yet (501).
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Optional, Union

from . import _aio
from ._http import HTTPClient, path_segment
from .connection_config import ConnectionConfig

__all__ = ["Volume", "VolumeAttachment", "Volumes", "AsyncVolumes"]


@dataclass
class VolumeAttachment:
    """One entry of ``Sandbox.create(volumes=[...])``."""

    volume_id: str
    mount_path: str
    mode: Optional[str] = None
    subpath: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"volume_id": self.volume_id, "mount_path": self.mount_path}
        if self.mode and self.mode != "copy":
            out["mode"] = self.mode
        if self.subpath:
            out["subpath"] = self.subpath
        return out


@dataclass
class Volume:
    volume_id: str
    owner_id: str = ""
    name: str = ""
    blob_key: str = ""
    size_bytes: int = 0
    content_type: str = ""
    created_at: str = ""
    metadata: Dict[str, str] = field(default_factory=dict)
    backend: str = ""
    quota_bytes: int = 0
    updated_at: str = ""
    files: int = 0
    unpacked_bytes: int = 0

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Volume":
        return cls(
            volume_id=d["volume_id"], owner_id=d.get("owner_id", ""), name=d.get("name", ""),
            blob_key=d.get("blob_key", ""), size_bytes=int(d.get("size_bytes", 0)),
            content_type=d.get("content_type", ""), created_at=d.get("created_at", ""),
            metadata=d.get("metadata") or {}, backend=d.get("backend", ""),
            quota_bytes=int(d.get("quota_bytes", 0)), updated_at=d.get("updated_at", ""),
            files=int(d.get("files", 0)), unpacked_bytes=int(d.get("unpacked_bytes", 0)),
        )

    def attach(self, mount_path: str, *, mode: Optional[str] = None, subpath: Optional[str] = None) -> VolumeAttachment:
        return VolumeAttachment(self.volume_id, mount_path, mode, subpath)


def _pack(path: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(str(path), arcname=path.name if path.is_file() else ".")
    return buf.getvalue()


def _http(api_key: Optional[str], domain: Optional[str], request_timeout: Optional[float]) -> HTTPClient:
    return HTTPClient(ConnectionConfig(api_key=api_key, domain=domain, request_timeout=request_timeout))


class Volumes:
    """The /volumes API (static methods, as in the official SDK)."""

    @staticmethod
    def create(name: str, data: Union[bytes, BinaryIO, str, "os.PathLike[str]"], *,
               api_key: Optional[str] = None, domain: Optional[str] = None,
               request_timeout: Optional[float] = None) -> Volume:
        """Upload a tar.gz (bytes or a binary file) or pack a file/directory
        path into one, and return the stored Volume."""
        if isinstance(data, (str, os.PathLike)):
            p = Path(data)
            if not p.exists():
                raise FileNotFoundError(f"volume source path does not exist: {p}")
            body = _pack(p)
        elif isinstance(data, (bytes, bytearray)):
            body = bytes(data)
        else:
            body = data.read()
        resp = _http(api_key, domain, request_timeout).request(
            "POST", "/volumes", query={"name": name}, body=body,
            headers={"Content-Type": "application/gzip"})
        return Volume.from_dict(resp.json())

    @staticmethod
    def list(*, api_key: Optional[str] = None, domain: Optional[str] = None,
             request_timeout: Optional[float] = None) -> List[Volume]:
        resp = _http(api_key, domain, request_timeout).request("GET", "/volumes")
        return [Volume.from_dict(v) for v in (resp.json() or {}).get("volumes", [])]

    @staticmethod
    def get(volume_id: str, *, api_key: Optional[str] = None, domain: Optional[str] = None,
            request_timeout: Optional[float] = None) -> Volume:
        resp = _http(api_key, domain, request_timeout).request("GET", "/volumes/" + path_segment(volume_id))
        return Volume.from_dict(resp.json())

    @staticmethod
    def download(volume_id: str, *, api_key: Optional[str] = None, domain: Optional[str] = None,
                 request_timeout: Optional[float] = None) -> bytes:
        """The volume's tar.gz (as stored: links and devices dropped)."""
        resp = _http(api_key, domain, request_timeout).request(
            "GET", "/volumes/" + path_segment(volume_id) + "/download", accept="application/gzip")
        return resp.content

    @staticmethod
    def delete(volume_id: str, *, api_key: Optional[str] = None, domain: Optional[str] = None,
               request_timeout: Optional[float] = None) -> None:
        """Delete a volume; ``ConflictException``-style 409 while attached to a live sandbox."""
        _http(api_key, domain, request_timeout).request("DELETE", "/volumes/" + path_segment(volume_id))


class AsyncVolumes:
    """``Volumes`` with coroutines."""

    @staticmethod
    async def create(name: str, data: Any, **kw: Any) -> Volume:
        return await _aio.call_long(Volumes.create, name, data, **kw)

    @staticmethod
    async def list(**kw: Any) -> List[Volume]:
        return await _aio.call(Volumes.list, **kw)

    @staticmethod
    async def get(volume_id: str, **kw: Any) -> Volume:
        return await _aio.call(Volumes.get, volume_id, **kw)

    @staticmethod
    async def download(volume_id: str, **kw: Any) -> bytes:
        return await _aio.call_long(Volumes.download, volume_id, **kw)

    @staticmethod
    async def delete(volume_id: str, **kw: Any) -> None:
        await _aio.call(Volumes.delete, volume_id, **kw)
