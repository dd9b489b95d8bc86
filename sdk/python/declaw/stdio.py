"""Interactive pipes: ``sandbox.stdio``.

A stdio process keeps stdin open. Output is read over SSE
(``GET .../stdio/{cmd_id}/stream``): ``stdout``/``stderr`` events carry
``{"data": base64, "entry_id": n}`` and the final ``exit`` event
``{"exit_code"}``. A dropped stream is resumed with ``?last_entry_id=n``.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Tuple, Union

from ._http import killed_flag, path_segment
from .exceptions import NotFoundException, SandboxException

if TYPE_CHECKING:  # pragma: no cover
    from .sandbox import Sandbox

__all__ = ["Stdio", "StdioHandle"]

ChunkCallback = Callable[[bytes], Any]
MAX_RESUMES = 5


class StdioHandle:
    """A process with open stdin. Iterating yields ``(stream, bytes)``
    pairs, ``stream`` being ``"stdout"`` or ``"stderr"``."""

    def __init__(
        self,
        stdio: "Stdio",
        cmd_id: str,
        on_stdout: Optional[ChunkCallback] = None,
        on_stderr: Optional[ChunkCallback] = None,
    ) -> None:
        self._stdio = stdio
        self._cmd_id = str(cmd_id)
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._last_entry_id: Optional[int] = None
        self._exit_code: Optional[int] = None

    @property
    def cmd_id(self) -> str:
        return self._cmd_id

    @property
    def exit_code(self) -> Optional[int]:
        return self._exit_code

    @property
    def last_entry_id(self) -> Optional[int]:
        return self._last_entry_id

    def _path(self, suffix: str = "") -> str:
        return f"/stdio/{path_segment(self._cmd_id)}{suffix}"

    def send_stdin(self, data: Union[str, bytes]) -> None:
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        self._stdio._sandbox._request(
            "POST", self._path("/stdin"), json={"data": base64.b64encode(raw).decode("ascii")}, retry=False
        )

    def close_stdin(self) -> None:
        """Send EOF to the process."""
        self._stdio._sandbox._request("POST", self._path("/stdin/close"), json={}, retry=True)

    def kill(self) -> bool:
        try:
            return killed_flag(self._stdio._sandbox._request("DELETE", self._path()))
        except NotFoundException:
            return False

    def __iter__(self) -> Iterator[Tuple[str, bytes]]:
        if self._exit_code is not None:
            return
        resumes = 0
        while True:
            query = {"last_entry_id": self._last_entry_id} if self._last_entry_id is not None else None
            resp = self._stdio._sandbox._request(
                "GET", self._path("/stream"), query=query, stream=True, accept="text/event-stream", timeout=None
            )
            try:
                for ev in resp.iter_sse():
                    kind, obj = ev.payload()
                    if kind == "exit" or "exit_code" in obj:
                        ec = obj.get("exit_code")
                        self._exit_code = int(ec) if ec is not None else -1
                        return
                    if kind in ("stdout", "stderr"):
                        if obj.get("entry_id") is not None:
                            self._last_entry_id = int(obj["entry_id"])
                        elif ev.id and ev.id.isdigit():
                            self._last_entry_id = int(ev.id)
                        chunk = base64.b64decode(obj.get("data") or "")
                        if chunk:
                            yield kind, chunk
            except SandboxException:
                resumes += 1
                if resumes > MAX_RESUMES:
                    raise
                continue  # resume after the last entry seen
            finally:
                resp.close()
            # The stream ended without an exit event.
            self._exit_code = -1
            return

    def stream(self) -> int:
        """Read all output, calling the callbacks; returns the exit code."""
        return self.wait()

    def wait(
        self, on_stdout: Optional[ChunkCallback] = None, on_stderr: Optional[ChunkCallback] = None
    ) -> int:
        """Read output until the process exits, calling the callbacks;
        returns the exit code (-1 if unknown)."""
        out_cb = on_stdout or self._on_stdout
        err_cb = on_stderr or self._on_stderr
        for kind, chunk in self:
            cb = out_cb if kind == "stdout" else err_cb
            if cb:
                cb(chunk)
        return self._exit_code if self._exit_code is not None else -1

    def __repr__(self) -> str:
        return f"StdioHandle(cmd_id={self._cmd_id!r})"


class Stdio:
    """Start processes whose stdin stays open."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    def start(
        self,
        cmd: str,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        on_stdout: Optional[ChunkCallback] = None,
        on_stderr: Optional[ChunkCallback] = None,
    ) -> StdioHandle:
        """Start ``cmd`` (``POST .../stdio``); returns a handle."""
        if not isinstance(cmd, str) or not cmd.strip():
            raise ValueError("cmd must be a non-empty string")
        body: Dict[str, Any] = {"cmd": cmd}
        if envs:
            body["envs"] = {str(k): str(v) for k, v in envs.items()}
        if user is not None:
            body["user"] = user
        if cwd is not None:
            body["cwd"] = cwd
        data = self._sandbox._request("POST", "/stdio", json=body).json() or {}
        cmd_id = data.get("cmd_id")
        if not cmd_id:
            raise SandboxException(f"stdio start answered without a cmd_id: {data!r}")
        return StdioHandle(self, str(cmd_id), on_stdout, on_stderr)

    def connect(
        self,
        cmd_id: str,
        on_stdout: Optional[ChunkCallback] = None,
        on_stderr: Optional[ChunkCallback] = None,
    ) -> StdioHandle:
        return StdioHandle(self, cmd_id, on_stdout, on_stderr)
