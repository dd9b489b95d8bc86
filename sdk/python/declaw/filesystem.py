"""Files inside a sandbox: ``sandbox.files``.

Paths are literal guest paths (relative ones resolve against the user's
home). ``user`` selects whose permissions apply; it defaults to the
server's default (root) and is sent as ``username``.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from ._http import DEFAULT as DEFAULT_TIMEOUT
from ._http import Response
from .exceptions import FileUploadException, SandboxException
from .models import EntryInfo, WriteInfo
from .watch import EventCallback, WatchHandle

if TYPE_CHECKING:  # pragma: no cover
    from .sandbox import Sandbox

__all__ = ["Filesystem", "WriteEntry", "UPLOAD_CHUNK_SIZE"]

UPLOAD_CHUNK_SIZE = 256 * 1024
#: Text writes larger than this go through the raw endpoint (JSON bodies are capped at 10 MiB).
MAX_JSON_TEXT = 8 * 1024 * 1024

FileData = Union[str, bytes, bytearray, memoryview, io.IOBase, Any]


@dataclass
class WriteEntry:
    """One file for ``write_files``."""

    path: str
    data: FileData


def _check_path(path: Any, name: str = "path") -> str:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise ValueError(f"{name} must be a non-empty string")
    if "\x00" in path:
        raise ValueError(f"{name} must not contain NUL bytes")
    return path


def _user_query(path: str, user: Optional[str], **extra: Any) -> Dict[str, Any]:
    q: Dict[str, Any] = {"path": path}
    q.update(extra)
    if user is not None:
        q["username"] = user
    return q


def _with_user(body: Dict[str, Any], user: Optional[str]) -> Dict[str, Any]:
    if user is not None:
        body["username"] = user
    return body


def _entries(data: Any, *keys: str) -> List[Any]:
    if isinstance(data, dict):
        for k in keys:
            if isinstance(data.get(k), list):
                return data[k]
        return []
    return data or []


class Filesystem:
    """File operations in a sandbox."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    def _request(self, method: str, path: str, **kw: Any) -> Response:
        return self._sandbox._request(method, path, **kw)

    # ------------------------------------------------------------ reading
    def read(
        self,
        path: str,
        format: str = "text",
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Any:
        """Read a file.

        ``format="text"`` (default) returns ``str`` (UTF-8, via ``GET /files``);
        ``"bytes"`` returns the exact bytes (``GET /files/raw``); ``"stream"``
        returns an iterator of ``bytes`` chunks that reads the file as it
        arrives (consume it fully or call ``close()`` on it).
        """
        path = _check_path(path)
        timeout = request_timeout if request_timeout is not None else DEFAULT_TIMEOUT
        if format == "text":
            resp = self._request("GET", "/files", query=_user_query(path, user), accept="*/*", timeout=timeout)
            return (resp.content or b"").decode("utf-8")
        if format == "bytes":
            resp = self._request("GET", "/files/raw", query=_user_query(path, user), accept="*/*", timeout=timeout)
            return resp.content or b""
        if format == "stream":
            resp = self._request(
                "GET", "/files/raw", query=_user_query(path, user), accept="*/*", stream=True, timeout=timeout
            )
            return resp.iter_bytes()
        raise ValueError(f"format must be 'text', 'bytes' or 'stream', got {format!r}")

    # ------------------------------------------------------------ writing
    def write(
        self,
        path: str,
        data: FileData,
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> WriteInfo:
        """Write a file, creating parent directories; returns ``WriteInfo``.

        ``str`` goes as JSON text (``POST /files``); ``bytes`` and binary or
        text file objects go byte-exact through ``PUT /files/raw``, file
        objects streamed in chunks (never loaded whole).
        """
        path = _check_path(path)
        timeout = request_timeout if request_timeout is not None else DEFAULT_TIMEOUT
        if isinstance(data, str):
            if len(data) > MAX_JSON_TEXT // 4 and len(data.encode("utf-8")) > MAX_JSON_TEXT:
                return self._write_raw(path, data.encode("utf-8"), user, timeout)
            resp = self._request(
                "POST",
                "/files",
                json=_with_user({"path": path, "data": data}, user),
                timeout=timeout,
                retry=True,  # overwriting with the same content is idempotent
            )
            return self._write_info(resp, path, len(data.encode("utf-8")))
        if isinstance(data, (bytes, bytearray, memoryview)):
            return self._write_raw(path, bytes(data), user, timeout)
        if hasattr(data, "read"):
            return self._write_raw(path, data, user, timeout)
        raise TypeError(f"data must be str, bytes or a file object, got {type(data).__name__}")

    @staticmethod
    def _write_info(resp: Response, path: str, size: int) -> WriteInfo:
        data = resp.json()
        if isinstance(data, dict) and data:
            return WriteInfo.from_dict(data)
        return WriteInfo(path=path, size=size)

    def _write_raw(self, path: str, data: Any, user: Optional[str], timeout: Any) -> WriteInfo:
        headers = {"Content-Type": "application/octet-stream"}
        size: Optional[int] = None
        retry = True
        if isinstance(data, bytes):
            body: Any = data
            size = len(data)
        else:
            start, size, binary = _probe_file(data)
            retry = start is not None  # only rewindable files can be sent again

            def body() -> Iterator[bytes]:
                if start is not None:
                    data.seek(start)
                return _iter_file(data, binary)

            if size is not None:
                headers["Content-Length"] = str(size)
        try:
            resp = self._request(
                "PUT",
                "/files/raw",
                query=_user_query(path, user),
                body=body,
                headers=headers,
                timeout=timeout,
                retry=retry,
                error_class=FileUploadException,
            )
        except SandboxException as e:
            if type(e) is SandboxException:  # transport failure, not an API answer
                raise FileUploadException(f"upload of {path} failed: {e.message}") from e
            raise
        return self._write_info(resp, path, size or 0)

    def write_files(
        self,
        files: Sequence[Union[WriteEntry, Mapping[str, Any]]],
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> List[WriteInfo]:
        """Write several files. Text entries go in one ``POST /files/batch``;
        bytes and file entries go one by one through ``PUT /files/raw``.
        Returns one ``WriteInfo`` per entry, in order."""
        entries: List[WriteEntry] = []
        for f in files:
            if isinstance(f, WriteEntry):
                entries.append(WriteEntry(_check_path(f.path), f.data))
            elif isinstance(f, Mapping):
                if "path" not in f or "data" not in f:
                    raise ValueError("each file must have 'path' and 'data'")
                entries.append(WriteEntry(_check_path(f["path"]), f["data"]))
            else:
                raise TypeError("files must be WriteEntry objects or {'path', 'data'} dicts")
        results: List[Optional[WriteInfo]] = [None] * len(entries)
        text_idx = [i for i, e in enumerate(entries) if isinstance(e.data, str)]
        timeout = request_timeout if request_timeout is not None else DEFAULT_TIMEOUT
        if text_idx:
            body = _with_user({"files": [{"path": entries[i].path, "data": entries[i].data} for i in text_idx]}, user)
            resp = self._request("POST", "/files/batch", json=body, timeout=timeout, retry=True)
            answered = _entries(resp.json(), "files", "results")
            for n, i in enumerate(text_idx):
                if n < len(answered) and isinstance(answered[n], dict):
                    results[i] = WriteInfo.from_dict(answered[n])
                else:
                    results[i] = WriteInfo(entries[i].path, len(entries[i].data.encode("utf-8")))
        for i, e in enumerate(entries):
            if results[i] is None:
                results[i] = self.write(e.path, e.data, user=user, request_timeout=request_timeout)
        return [r for r in results if r is not None]

    # ----------------------------------------------------------- metadata
    def list(self, path: str, depth: int = 1, user: Optional[str] = None) -> List[EntryInfo]:
        """Entries under ``path`` down to ``depth`` levels (1 = direct children)."""
        path = _check_path(path)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
        data = self._request("GET", "/files/list", query=_user_query(path, user, depth=depth)).json()
        return [EntryInfo.from_dict(e) for e in _entries(data, "entries", "files")]

    def exists(self, path: str, user: Optional[str] = None) -> bool:
        path = _check_path(path)
        data = self._request("GET", "/files/exists", query=_user_query(path, user)).json() or {}
        return bool(data.get("exists"))

    def get_info(self, path: str, user: Optional[str] = None) -> EntryInfo:
        """Stat one path (``NotFoundException`` if missing)."""
        path = _check_path(path)
        return EntryInfo.from_dict(self._request("GET", "/files/info", query=_user_query(path, user)).json() or {})

    def remove(self, path: str, user: Optional[str] = None) -> None:
        """Remove a file or a directory tree."""
        path = _check_path(path)
        self._request("DELETE", "/files", query=_user_query(path, user))

    def rename(self, old_path: str, new_path: str, user: Optional[str] = None) -> EntryInfo:
        """Move ``old_path`` to ``new_path``; returns the new entry."""
        body = _with_user({"old_path": _check_path(old_path, "old_path"), "new_path": _check_path(new_path, "new_path")}, user)
        return EntryInfo.from_dict(self._request("PATCH", "/files", json=body).json() or {})

    def make_dir(self, path: str, user: Optional[str] = None) -> bool:
        """Create a directory and its parents; False if it already existed."""
        path = _check_path(path)
        data = self._request("POST", "/files/mkdir", json=_with_user({"path": path}, user), retry=True).json() or {}
        return bool(data.get("created"))

    # -------------------------------------------------------------- watch
    def _start_watch(self, path: str, recursive: bool, user: Optional[str]) -> str:
        path = _check_path(path)
        if not isinstance(recursive, bool):
            raise TypeError("recursive must be a bool")
        body = _with_user({"path": path, "recursive": recursive}, user)
        data = self._request("POST", "/files/watch", json=body).json() or {}
        watcher_id = data.get("watcher_id") if isinstance(data, dict) else None
        if not watcher_id:
            raise SandboxException(f"watch answered without a watcher_id: {data!r}")
        return str(watcher_id)

    def watch_dir(
        self,
        path: str,
        recursive: bool = False,
        on_event: Optional[EventCallback] = None,
        user: Optional[str] = None,
    ) -> WatchHandle:
        """Watch a directory (``POST .../files/watch``) and follow its
        events over SSE. Returns a ``WatchHandle``: iterate it or call
        ``get_new_events()``, or pass ``on_event`` to get each
        ``FilesystemEvent`` in a background thread. ``recursive`` watches the
        whole tree (new subdirectories included). Stop it with ``stop()`` or
        a ``with`` block."""
        watcher_id = self._start_watch(path, recursive, user)
        return WatchHandle(self, watcher_id, path, on_event)


def _probe_file(f: Any) -> "tuple[Optional[int], Optional[int], bool]":
    """(start offset if rewindable, byte size if known, binary?) of a file object."""
    binary = not isinstance(f, io.TextIOBase)
    try:
        if binary and isinstance(f.read(0), str):
            binary = False
    except (OSError, ValueError, TypeError):
        pass
    start: Optional[int] = None
    size: Optional[int] = None
    try:
        if f.seekable():
            start = f.tell()
            if binary:
                end = f.seek(0, io.SEEK_END)
                size = end - start
            f.seek(start)
    except (AttributeError, OSError, ValueError):
        start = None
        size = None
    return start, size, binary


def _iter_file(f: Any, binary: bool) -> Iterator[bytes]:
    while True:
        chunk = f.read(UPLOAD_CHUNK_SIZE)
        if not chunk:
            return
        if not binary or isinstance(chunk, str):
            yield chunk.encode("utf-8")
        else:
            yield bytes(chunk)
