"""Processes inside a sandbox: ``sandbox.commands``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Union

from ._http import DEFAULT as DEFAULT_TIMEOUT
from ._http import Response, killed_flag, path_segment
from .exceptions import CommandExitException, NotFoundException, SandboxException, TimeoutException
from .models import CommandResult, ProcessInfo

if TYPE_CHECKING:  # pragma: no cover
    from .sandbox import Sandbox

__all__ = ["Commands", "CommandHandle", "OutputCallback", "DEFAULT_COMMAND_TIMEOUT"]

OutputCallback = Callable[[str], Any]

DEFAULT_COMMAND_TIMEOUT = 60
#: Extra seconds the HTTP request may take beyond the command's own timeout.
COMMAND_TIMEOUT_MARGIN = 30.0


def _check_timeout(timeout: Any) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    return float(timeout)


def _stdin_text(data: Union[str, bytes]) -> str:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data).decode("utf-8")
    if not isinstance(data, str):
        raise TypeError(f"stdin data must be str or bytes, got {type(data).__name__}")
    return data


class CommandHandle:
    """A background command. ``wait()`` blocks until it exits."""

    def __init__(
        self,
        commands: "Commands",
        pid: int,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> None:
        self._commands = commands
        self._pid = int(pid)
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._result: Optional[CommandResult] = None

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def stdout(self) -> str:
        return self._result.stdout if self._result else ""

    @property
    def stderr(self) -> str:
        return self._result.stderr if self._result else ""

    @property
    def exit_code(self) -> Optional[int]:
        return self._result.exit_code if self._result else None

    @property
    def error(self) -> Optional[str]:
        return self._result.error if self._result else None

    def wait(
        self,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        request_timeout: Optional[float] = None,
    ) -> CommandResult:
        """Block until the command exits (``GET .../commands/{pid}/wait``).

        The callbacks (or those given to ``run``) receive the whole output
        once it is known. Raises ``CommandExitException`` if the exit code is
        not zero. ``request_timeout`` bounds the wait (default: none).
        """
        if self._result is None:
            resp = self._commands._request(
                "GET", f"/commands/{self._pid}/wait", timeout=request_timeout or None
            )
            result = CommandResult.from_dict(resp.json() or {})
            if result.pid is None:
                result.pid = self._pid
            self._result = result
        result = self._result
        out_cb = on_stdout or self._on_stdout
        err_cb = on_stderr or self._on_stderr
        if out_cb and result.stdout:
            out_cb(result.stdout)
        if err_cb and result.stderr:
            err_cb(result.stderr)
        if result.exit_code != 0:
            raise CommandExitException(
                result.exit_code, result.stdout, result.stderr, error=result.error, pid=self._pid
            )
        return result

    def kill(self) -> bool:
        """Kill the command and its process tree; False if it was already gone."""
        return self._commands.kill(self._pid)

    def send_stdin(self, data: Union[str, bytes]) -> None:
        """Write to the command's stdin (start it with ``stdin=True``)."""
        self._commands.send_stdin(self._pid, data)

    def disconnect(self) -> None:
        """Stop tracking the command locally; it keeps running."""

    def __repr__(self) -> str:
        return f"CommandHandle(pid={self._pid})"


class Commands:
    """Run and manage processes in a sandbox (as root by default, in the
    user's home directory unless ``cwd`` is given)."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    def _request(self, method: str, path: str, **kw: Any) -> Response:
        return self._sandbox._request(method, path, **kw)

    def _http_timeout(self, timeout: Optional[float], request_timeout: Optional[float]) -> Optional[float]:
        base = self._sandbox.connection_config.request_timeout if request_timeout is None else (request_timeout or None)
        if not timeout:  # no command timeout: the request cannot have one either
            return None
        if base is None:
            return None
        return max(base, timeout + COMMAND_TIMEOUT_MARGIN)

    @staticmethod
    def _body(
        cmd: str,
        background: bool,
        envs: Optional[Dict[str, str]],
        user: Optional[str],
        cwd: Optional[str],
        timeout: Optional[float],
        stdin: bool = False,
        tag: Optional[str] = None,
    ) -> Dict[str, Any]:
        if not isinstance(cmd, str) or not cmd.strip():
            raise ValueError("cmd must be a non-empty string")
        body: Dict[str, Any] = {"cmd": cmd, "background": background}
        if timeout is not None:
            body["timeout"] = int(timeout) if float(timeout).is_integer() else timeout
        if envs:
            body["envs"] = {str(k): str(getattr(v, "value", v)) for k, v in envs.items()}
        if user is not None:
            body["user"] = user
        if cwd is not None:
            body["cwd"] = cwd
        if stdin:
            body["stdin"] = True
        if tag is not None:
            body["tag"] = tag
        return body

    def run(
        self,
        cmd: str,
        background: bool = False,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        stdin: Optional[bool] = None,
        timeout: Optional[float] = DEFAULT_COMMAND_TIMEOUT,
        request_timeout: Optional[float] = None,
        tag: Optional[str] = None,
    ) -> Any:
        """Run ``cmd`` with ``/bin/bash -l -c``.

        Foreground (default): returns a ``CommandResult`` once the command
        exits; a non-zero exit code does not raise. With ``on_stdout`` /
        ``on_stderr`` the output is streamed and the callbacks are called as
        chunks arrive. ``timeout`` is the command's limit in seconds (0 =
        none); the command is killed when it passes it (``TimeoutException``).

        Background (``background=True``): returns a ``CommandHandle`` at once.
        ``stdin=True`` keeps a stdin pipe open for ``send_stdin``.
        """
        timeout = _check_timeout(timeout)
        if stdin is not None and not isinstance(stdin, bool):
            raise TypeError("stdin must be a bool (True keeps a stdin pipe open for send_stdin)")
        if background:
            body = self._body(cmd, True, envs, user, cwd, timeout, bool(stdin), tag)
            resp = self._request("POST", "/commands", json=body, timeout=request_timeout or DEFAULT_TIMEOUT)
            data = resp.json() or {}
            if "pid" not in data:
                raise SandboxException(f"background command start answered without a pid: {data!r}")
            return CommandHandle(self, data["pid"], on_stdout, on_stderr)
        if on_stdout is not None or on_stderr is not None:
            return self._stream(cmd, on_stdout, on_stderr, envs, user, cwd, timeout, request_timeout, tag)
        body = self._body(cmd, False, envs, user, cwd, timeout, False, tag)  # stdin pipes are for background
        resp = self._request(
            "POST", "/commands", json=body, timeout=self._http_timeout(timeout, request_timeout)
        )
        return CommandResult.from_dict(resp.json() or {})

    def run_stream(
        self,
        cmd: str,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_COMMAND_TIMEOUT,
        request_timeout: Optional[float] = None,
    ) -> CommandResult:
        """Run ``cmd`` in the foreground over SSE (``POST .../commands/stream``),
        calling the callbacks with each output chunk as it arrives. Returns the
        ``CommandResult`` (full output concatenated); does not raise on a
        non-zero exit code."""
        return self._stream(cmd, on_stdout, on_stderr, envs, user, cwd, _check_timeout(timeout), request_timeout, None)

    def _stream(
        self,
        cmd: str,
        on_stdout: Optional[OutputCallback],
        on_stderr: Optional[OutputCallback],
        envs: Optional[Dict[str, str]],
        user: Optional[str],
        cwd: Optional[str],
        timeout: Optional[float],
        request_timeout: Optional[float],
        tag: Optional[str],
    ) -> CommandResult:
        body = self._body(cmd, False, envs, user, cwd, timeout, False, tag)
        body["stream"] = True
        resp = self._request(
            "POST",
            "/commands/stream",
            json=body,
            stream=True,
            accept="text/event-stream",
            timeout=self._http_timeout(timeout, request_timeout),
        )
        return consume_command_stream(resp, on_stdout, on_stderr)

    def list(self) -> List[ProcessInfo]:
        """Running processes started through the API (``GET .../commands``)."""
        data = self._request("GET", "/commands").json()
        if isinstance(data, dict):
            data = data.get("processes") or data.get("commands") or []
        return [ProcessInfo.from_dict(p) for p in data or []]

    def kill(self, pid: int) -> bool:
        """Kill a process tree (SIGKILL); False if no such process."""
        try:
            return killed_flag(self._request("DELETE", f"/commands/{path_segment(int(pid))}"))
        except NotFoundException:
            return False

    def send_stdin(self, pid: int, data: Union[str, bytes]) -> None:
        """Write ``data`` to the stdin of a process started with ``stdin=True``."""
        self._request(
            "POST", f"/commands/{path_segment(int(pid))}/stdin", json={"data": _stdin_text(data)}, retry=False
        )

    def connect(
        self,
        pid: int,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> CommandHandle:
        """A handle on a running process; raises ``NotFoundException`` if it
        is not running."""
        pid = int(pid)
        if not any(p.pid == pid for p in self.list()):
            raise NotFoundException(f"process {pid} not found", status=404)
        return CommandHandle(self, pid, on_stdout, on_stderr)


def consume_command_stream(
    resp: Response,
    on_stdout: Optional[OutputCallback] = None,
    on_stderr: Optional[OutputCallback] = None,
) -> CommandResult:
    """Read a command SSE stream to its ``exit`` (or ``error``) event.

    Event data is JSON; its kind comes from ``type``, else ``stream``, else
    the SSE ``event`` name: ``start`` {pid}, ``stdout``/``stderr`` {data},
    ``exit`` {exit_code}, ``error`` {error, code?}.
    """
    out: List[str] = []
    err: List[str] = []
    pid: Optional[int] = None
    exit_code: Optional[int] = None
    error: Optional[str] = None
    error_code: Optional[str] = None
    finished = False
    try:
        for ev in resp.iter_sse():
            kind, obj = ev.payload()
            if kind == "start":
                if obj.get("pid") is not None:
                    pid = int(obj["pid"])
            elif kind in ("stdout", "stderr"):
                chunk = obj.get("data")
                if chunk is None or chunk == "":
                    continue
                chunk = str(chunk)
                if kind == "stdout":
                    out.append(chunk)
                    if on_stdout:
                        on_stdout(chunk)
                else:
                    err.append(chunk)
                    if on_stderr:
                        on_stderr(chunk)
            elif kind == "exit" or (kind == "message" and "exit_code" in obj):
                ec = obj.get("exit_code")
                exit_code = int(ec) if ec is not None else -1
                error = obj.get("error") or None
                if obj.get("pid") is not None and pid is None:
                    pid = int(obj["pid"])
                finished = True
                break
            elif kind == "error" or (kind == "message" and "error" in obj):
                error = str(obj.get("error") or obj.get("message") or "command failed")
                error_code = obj.get("code")
                if obj.get("exit_code") is not None:
                    exit_code = int(obj["exit_code"])
                finished = True
                break
    finally:
        resp.close()
    if not finished:
        raise SandboxException("command stream ended before an exit event")
    if exit_code is None:
        if error_code == "timeout" or "timed out" in (error or "").lower() or "timeout" in (error or "").lower():
            raise TimeoutException(error or "command timed out", code=error_code)
        raise SandboxException(error or "command failed", code=error_code)
    return CommandResult(stdout="".join(out), stderr="".join(err), exit_code=exit_code, error=error, pid=pid)
