"""Interactive terminals: ``sandbox.pty``.

Output arrives over SSE (``GET .../pty/{pid}/stream``): ``data`` events
carry ``{"data": base64}``, the final ``exit`` event ``{"exit_code"}``.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Union

from ._http import Response, killed_flag, path_segment
from .exceptions import NotFoundException, SandboxException

if TYPE_CHECKING:  # pragma: no cover
    from .sandbox import Sandbox

__all__ = ["Pty", "PtyHandle", "PtySize", "DEFAULT_PTY_TIMEOUT"]

DEFAULT_PTY_TIMEOUT = 3600

DataCallback = Callable[[bytes], Any]


@dataclass
class PtySize:
    cols: int = 80
    rows: int = 24

    def to_dict(self) -> Dict[str, int]:
        for name in ("cols", "rows"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
                raise ValueError(f"PtySize.{name} must be an integer in [1, 65535], got {v!r}")
        return {"cols": self.cols, "rows": self.rows}


def _decode_b64(value: Any) -> bytes:
    if not value:
        return b""
    return base64.b64decode(value)


class PtyHandle:
    """A terminal session. Iterate it (or call ``wait``) to read output."""

    def __init__(self, pty: "Pty", pid: int, stream: Optional[Response] = None) -> None:
        self._pty = pty
        self._pid = int(pid)
        self._stream = stream
        self._exit_code: Optional[int] = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def exit_code(self) -> Optional[int]:
        return self._exit_code

    def _open(self) -> Response:
        if self._stream is None:
            self._stream = self._pty._open_stream(self._pid)
        return self._stream

    def __iter__(self) -> Iterator[bytes]:
        """Yield output bytes until the terminal's process exits."""
        with self._lock:
            resp = self._open()
            try:
                for ev in resp.iter_sse():
                    kind, obj = ev.payload()
                    if kind == "exit" or "exit_code" in obj:
                        ec = obj.get("exit_code")
                        self._exit_code = int(ec) if ec is not None else -1
                        return
                    if kind in ("data", "message", "stdout"):
                        chunk = _decode_b64(obj.get("data"))
                        if chunk:
                            yield chunk
            finally:
                resp.close()
                self._stream = None

    def wait(self, on_data: Optional[DataCallback] = None) -> int:
        """Read output until the process exits; returns its exit code
        (-1 if the stream ended without one)."""
        for chunk in self:
            if on_data:
                on_data(chunk)
        return self._exit_code if self._exit_code is not None else -1

    def send_stdin(self, data: Union[str, bytes]) -> None:
        self._pty.send_stdin(self._pid, data)

    def resize(self, size: PtySize) -> None:
        self._pty.resize(self._pid, size)

    def kill(self) -> bool:
        return self._pty.kill(self._pid)

    def disconnect(self) -> None:
        """Stop reading output; the terminal keeps running."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def __repr__(self) -> str:
        return f"PtyHandle(pid={self._pid})"


class Pty:
    """Create and drive terminals in a sandbox."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    def _open_stream(self, pid: int) -> Response:
        return self._sandbox._request(
            "GET", f"/pty/{path_segment(pid)}/stream", stream=True, accept="text/event-stream", timeout=None
        )

    def create(
        self,
        size: Optional[PtySize] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        envs: Optional[Dict[str, str]] = None,
        timeout: Optional[int] = DEFAULT_PTY_TIMEOUT,
        cmd: Optional[str] = None,
    ) -> PtyHandle:
        """Start a login shell (or ``cmd``) on a new terminal
        (``POST .../pty``) and subscribe to its output at once."""
        body: Dict[str, Any] = {"size": (size or PtySize()).to_dict()}
        if user is not None:
            body["user"] = user
        if cwd is not None:
            body["cwd"] = cwd
        if envs:
            body["envs"] = {str(k): str(v) for k, v in envs.items()}
        if timeout is not None:
            body["timeout"] = timeout
        if cmd is not None:
            body["cmd"] = cmd
        data = self._sandbox._request("POST", "/pty", json=body).json() or {}
        if "pid" not in data:
            raise SandboxException(f"pty create answered without a pid: {data!r}")
        pid = int(data["pid"])
        return PtyHandle(self, pid, self._open_stream(pid))

    def connect(self, pid: int) -> PtyHandle:
        """Subscribe to an existing terminal's output."""
        return PtyHandle(self, pid, self._open_stream(int(pid)))

    def send_stdin(self, pid: int, data: Union[str, bytes]) -> None:
        """Type into the terminal (sent as UTF-8 text, not base64)."""
        text = bytes(data).decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        self._sandbox._request("POST", f"/pty/{path_segment(int(pid))}/stdin", json={"data": text}, retry=False)

    def resize(self, pid: int, size: PtySize) -> None:
        self._sandbox._request("PATCH", f"/pty/{path_segment(int(pid))}", json={"size": size.to_dict()}, retry=True)

    def kill(self, pid: int) -> bool:
        try:
            return killed_flag(self._sandbox._request("DELETE", f"/pty/{path_segment(int(pid))}"))
        except NotFoundException:
            return False
