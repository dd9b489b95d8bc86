"""Custom templates: build your own sandbox environment.

    from declaw import Sandbox, Template

    tpl = (Template().from_base_image("python")
           .apt_install("jq")
           .run_cmd("pip install flask")
           .copy("app.py", "/app/app.py")
           .set_start_cmd("python /app/app.py", ready_check={"port": 5000}))
    Template.build(tpl, alias="my-app", on_build_logs=print)
    sbx = Sandbox.create(template="my-app")

``TemplateBase`` is the fluent builder (the official SDK's names), ``Template``
builds and manages templates, ``AsyncTemplate`` is the same with coroutines.
A build runs on the server: its steps run in a sandbox of the image being
built and are cached step by step (see docs/templates.md).
"""

from __future__ import annotations

import io
import os
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Union

from . import _aio
from ._http import HTTPClient, path_segment
from .connection_config import ConnectionConfig
from .exceptions import BuildException, InvalidArgumentException, SandboxException, TimeoutException

__all__ = [
    "TemplateBase",
    "Template",
    "AsyncTemplate",
    "CopyItem",
    "BuildInfo",
    "TemplateBuildStatus",
    "TemplateInfo",
    "BUILD_STATUS_BUILDING",
    "BUILD_STATUS_COMPLETED",
    "BUILD_STATUS_FAILED",
]

BUILD_STATUS_BUILDING = "building"
BUILD_STATUS_COMPLETED = "completed"
BUILD_STATUS_FAILED = "failed"

#: Default for how long ``Template.build`` waits, in seconds.
DEFAULT_BUILD_TIMEOUT = 3600.0

#: Largest Dockerfile the server takes.
MAX_DOCKERFILE = 64 << 10

ReadyCheck = Union[str, int, Dict[str, Any], None]


@dataclass
class CopyItem:
    src: str
    dst: str
    mode: Optional[int] = None


def _ready_dict(ready: ReadyCheck, timeout: Optional[int]) -> Optional[Dict[str, Any]]:
    """A ready check as the server takes it: a command (str), a port (int)
    or a dict with one of cmd, port, url (and timeout)."""
    if ready is None:
        return None
    if isinstance(ready, bool):
        raise InvalidArgumentException("ready_check must be a command, a port or a dict")
    if isinstance(ready, int):
        out: Dict[str, Any] = {"port": ready}
    elif isinstance(ready, str):
        out = {"url": ready} if ready.startswith(("http://", "https://")) else {"cmd": ready}
    elif isinstance(ready, dict):
        out = {k: v for k, v in ready.items() if k in ("cmd", "port", "url", "timeout")}
        if "command" in ready:
            out["cmd"] = ready["command"]
        if sum(1 for k in ("cmd", "port", "url") if out.get(k)) != 1:
            raise InvalidArgumentException("ready_check: give exactly one of cmd, port, url")
    else:
        raise InvalidArgumentException("ready_check must be a command, a port or a dict")
    if timeout is not None:
        out["timeout"] = int(timeout)
    return out


@dataclass
class TemplateBase:
    """Builder for defining sandbox templates via a fluent API.

    The base is a built-in template (``base``, ``python``, ``node``), a custom
    template of the server, or an image reference (``python:3.12-slim``).
    """

    _base_image: str = "base"
    _run_cmds: List[List[str]] = field(default_factory=list)
    _copies: List[CopyItem] = field(default_factory=list)
    _envs: Dict[str, str] = field(default_factory=dict)
    _apt_packages: List[str] = field(default_factory=list)
    _workdir: Optional[str] = None
    _user: Optional[str] = None
    _start_cmd: Optional[str] = None
    _start_cmd_ready: ReadyCheck = None
    _ready_timeout: Optional[int] = None
    # When set, the server builds this Dockerfile and ignores the helpers.
    _dockerfile: Optional[str] = None
    _context_dir: Optional[str] = None

    def from_base_image(self, image: str = "base") -> "TemplateBase":
        self._base_image = image
        return self

    def from_dockerfile(self, content: str, context_dir: Optional[str] = None) -> "TemplateBase":
        """Build this Dockerfile (at most 64 KiB) instead of the helpers.
        ``context_dir`` is uploaded as the build context for COPY/ADD."""
        if len(content.encode("utf-8")) > MAX_DOCKERFILE:
            raise InvalidArgumentException(f"the Dockerfile is larger than {MAX_DOCKERFILE} bytes")
        self._dockerfile = content
        self._context_dir = context_dir
        return self

    def run_cmd(self, cmds: Union[str, List[str]]) -> "TemplateBase":
        """Add a RUN step: a shell line, or a list joined with spaces."""
        self._run_cmds.append([cmds] if isinstance(cmds, str) else list(cmds))
        return self

    def copy(self, src: str, dst: str, mode: Optional[int] = None) -> "TemplateBase":
        """Copy a local file or directory (relative to the build's
        ``context_dir``, default the working directory) into the template."""
        self._copies.append(CopyItem(src=src, dst=dst, mode=mode))
        return self

    def set_envs(self, envs: Dict[str, str]) -> "TemplateBase":
        self._envs.update(envs)
        return self

    def apt_install(self, *packages: str) -> "TemplateBase":
        for p in packages:
            self._apt_packages.extend([p] if isinstance(p, str) else list(p))
        return self

    def set_workdir(self, path: str) -> "TemplateBase":
        self._workdir = path
        return self

    def set_user(self, user: str) -> "TemplateBase":
        self._user = user
        return self

    def set_start_cmd(self, cmd: str, ready_check: ReadyCheck = None, timeout: Optional[int] = None) -> "TemplateBase":
        """Start ``cmd`` in the background in every new sandbox; with a
        ready check, ``Sandbox.create`` returns once it passes: a command
        that exits 0 (str), a port that accepts (int), a URL that answers
        (``http://localhost:PORT/...``), or ``{"cmd"|"port"|"url": ...,
        "timeout": seconds}``."""
        _ready_dict(ready_check, timeout)  # validate now
        self._start_cmd = cmd
        self._start_cmd_ready = ready_check
        self._ready_timeout = timeout
        return self

    def to_dict(self) -> Dict[str, Any]:
        ready = _ready_dict(self._start_cmd_ready, self._ready_timeout)
        if self._dockerfile is not None:
            out: Dict[str, Any] = {"dockerfile": self._dockerfile}
            if self._start_cmd:
                out["start_cmd"] = self._start_cmd
            if ready:
                out["ready_check"] = ready
            return out
        result: Dict[str, Any] = {"base_image": self._base_image}
        if self._run_cmds:
            result["run_cmds"] = [" ".join(group) for group in self._run_cmds]
        if self._envs:
            result["envs"] = dict(self._envs)
        if self._apt_packages:
            result["apt_packages"] = list(self._apt_packages)
        if self._copies:
            result["copies"] = [
                {k: v for k, v in (("src", _context_name(c.src)), ("dst", c.dst), ("mode", c.mode)) if v is not None}
                for c in self._copies
            ]
        if self._workdir:
            result["workdir"] = self._workdir
        if self._user:
            result["user"] = self._user
        if self._start_cmd:
            result["start_cmd"] = self._start_cmd
        if ready:
            result["ready_check"] = ready
        return result

    def _context_tar(self, context_dir: Optional[str]) -> Optional[bytes]:
        """The build context to upload: the Dockerfile's context directory,
        or the sources of copy() steps; None when there is nothing."""
        if self._dockerfile is not None:
            root = context_dir or self._context_dir
            if root is None:
                return None
            return _tar_paths(root, ["."])
        if not self._copies:
            return None
        root = context_dir or os.getcwd()
        return _tar_paths(root, [_context_name(c.src) for c in self._copies])


def _context_name(src: str) -> str:
    norm = os.path.normpath(src).replace(os.sep, "/")
    if os.path.isabs(src) or norm == ".." or norm.startswith("../"):
        raise InvalidArgumentException(f"copy source {src!r} must be relative to the build context")
    return norm


def _tar_paths(root: str, names: List[str]) -> bytes:
    if not os.path.isdir(root):
        raise InvalidArgumentException(f"build context {root!r} is not a directory")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in names:
            path = os.path.join(root, name)
            if not os.path.lexists(path):
                raise InvalidArgumentException(f"copy source {name!r} does not exist in {root!r}")

            def clean(info: tarfile.TarInfo) -> Optional[tarfile.TarInfo]:
                if info.name.split("/")[-1] == ".git":
                    return None
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                return info

            tar.add(path, arcname=name, filter=clean)
    return buf.getvalue()


def _multipart(request: Dict[str, Any], context: bytes) -> tuple:
    import json

    boundary = "declaw-" + uuid.uuid4().hex
    parts = [
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"request\"\r\nContent-Type: application/json\r\n\r\n".encode(),
        json.dumps(request).encode("utf-8"),
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"context\"; filename=\"context.tar.gz\"\r\n"
        "Content-Type: application/gzip\r\n\r\n".encode(),
        context,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@dataclass
class BuildInfo:
    build_id: str
    status: str
    template_id: Optional[str] = None
    alias: Optional[str] = None
    logs: List[str] = field(default_factory=list)
    reason: Optional[str] = None
    step: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"build_id": self.build_id, "status": self.status, "template_id": self.template_id, "logs": self.logs}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "BuildInfo":
        return cls(
            build_id=data["build_id"], status=data["status"], template_id=data.get("template_id"),
            alias=data.get("alias"), logs=data.get("logs") or [], reason=data.get("reason"), step=data.get("step"),
        )


@dataclass
class TemplateBuildStatus:
    build_id: str
    status: str
    logs: List[str] = field(default_factory=list)
    template_id: Optional[str] = None
    alias: Optional[str] = None
    reason: Optional[str] = None
    step: Optional[str] = None
    next_offset: int = 0

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TemplateBuildStatus":
        return cls(
            build_id=data["build_id"], status=data["status"], logs=data.get("logs") or [],
            template_id=data.get("template_id"), alias=data.get("alias"), reason=data.get("reason"),
            step=data.get("step"), next_offset=int(data.get("next_offset") or 0),
        )


@dataclass
class TemplateInfo:
    template_id: str
    alias: str
    builtin: bool = False
    created_at: Optional[str] = None
    size_bytes: int = 0
    start_cmd: Optional[str] = None
    in_use: int = 0
    raw: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TemplateInfo":
        return cls(
            template_id=d.get("template_id", ""), alias=d.get("alias", ""), builtin=bool(d.get("builtin")),
            created_at=d.get("created_at"), size_bytes=int(d.get("size_bytes") or 0), start_cmd=d.get("start_cmd"),
            in_use=int(d.get("in_use") or 0), raw=d,
        )


def _build_failed(st: Union[TemplateBuildStatus, BuildInfo], logs: List[str]) -> BuildException:
    msg = f"template build {st.build_id} failed"
    if st.step:
        msg += f" at step {st.step!r}"
    if st.reason:
        msg += f": {st.reason}"
    e = BuildException(msg)
    e.build_id = st.build_id  # type: ignore[attr-defined]
    e.template_id = st.template_id  # type: ignore[attr-defined]
    e.logs = logs  # type: ignore[attr-defined]
    e.step = st.step  # type: ignore[attr-defined]
    return e


def _http(api_key: Optional[str], domain: Optional[str], request_timeout: Optional[float]) -> HTTPClient:
    return HTTPClient(ConnectionConfig(api_key=api_key, domain=domain, request_timeout=request_timeout))


def _request_body(template: TemplateBase, alias: Optional[str], cpu_count: Optional[int], memory_mb: Optional[int],
                  disk_mb: Optional[int], force: bool) -> Dict[str, Any]:
    if not isinstance(template, TemplateBase):
        raise InvalidArgumentException("template must be a TemplateBase")
    body: Dict[str, Any] = {"template": template.to_dict(), "background": True}
    if alias:
        body["alias"] = alias
    for k, v in (("cpu_count", cpu_count), ("memory_mb", memory_mb), ("disk_mb", disk_mb)):
        if v is not None:
            body[k] = v
    if force:
        body["force"] = True
    return body


class Template(TemplateBase):
    """Builds and manages templates (blocking). ``Template()`` is also a builder."""

    @staticmethod
    def build_in_background(
        template: TemplateBase,
        alias: Optional[str] = None,
        cpu_count: Optional[int] = None,
        memory_mb: Optional[int] = None,
        disk_mb: Optional[int] = None,
        *,
        force: bool = False,
        context_dir: Optional[str] = None,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> BuildInfo:
        """Start a build and return at once (status ``building``)."""
        body = _request_body(template, alias, cpu_count, memory_mb, disk_mb, force)
        http = _http(api_key, domain, request_timeout)
        ctx = template._context_tar(context_dir)
        if ctx is None:
            resp = http.request("POST", "/templates/build", json=body)
        else:
            payload, ctype = _multipart(body, ctx)
            resp = http.request("POST", "/templates/build", body=payload, headers={"Content-Type": ctype})
        return BuildInfo.from_dict(resp.json())

    @staticmethod
    def build(
        template: TemplateBase,
        alias: Optional[str] = None,
        cpu_count: Optional[int] = None,
        memory_mb: Optional[int] = None,
        disk_mb: Optional[int] = None,
        on_build_logs: Optional[Callable[[str], Any]] = None,
        *,
        force: bool = False,
        context_dir: Optional[str] = None,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
        build_timeout: float = DEFAULT_BUILD_TIMEOUT,
    ) -> BuildInfo:
        """Build a template and wait for it, passing each log line to
        ``on_build_logs`` as it is written. Raises ``BuildException`` (with
        ``step`` and ``logs``) when the build fails, ``TimeoutException``
        after ``build_timeout`` seconds (the build goes on)."""
        info = Template.build_in_background(
            template, alias, cpu_count, memory_mb, disk_mb, force=force, context_dir=context_dir,
            api_key=api_key, domain=domain, request_timeout=request_timeout,
        )
        return Template.wait_for_build(
            info.build_id, on_build_logs=on_build_logs, build_timeout=build_timeout,
            api_key=api_key, domain=domain, request_timeout=request_timeout,
        )

    @staticmethod
    def wait_for_build(
        build_id: str,
        on_build_logs: Optional[Callable[[str], Any]] = None,
        *,
        build_timeout: float = DEFAULT_BUILD_TIMEOUT,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> BuildInfo:
        """Follow a build's log stream until it ends; see ``build``."""
        http = _http(api_key, domain, request_timeout)
        deadline = time.monotonic() + build_timeout
        logs: List[str] = []
        offset = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutException(f"template build {build_id} was still running after {build_timeout:g}s; it goes on")
            final: Optional[Dict[str, Any]] = None
            try:
                resp = http.request(
                    "GET", f"/templates/builds/{path_segment(build_id)}/logs",
                    query={"follow": "true", "offset": offset}, stream=True, accept="text/event-stream",
                    timeout=min(remaining, 600.0),
                )
                try:
                    for ev in resp.iter_sse():
                        data = ev.json() if ev.data else {}
                        if ev.event == "log":
                            line = data.get("line", "")
                            logs.append(line)
                            offset = int(data.get("offset", offset)) + 1
                            if on_build_logs:
                                on_build_logs(line)
                        elif ev.event == "status":
                            final = data
                            break
                finally:
                    resp.close()
            except (TimeoutException, OSError):
                continue  # a long quiet step or a dropped stream: reconnect from the offset
            if final is None:
                continue  # the stream dropped: resume from the offset
            st = TemplateBuildStatus.from_dict(final)
            if st.status == BUILD_STATUS_COMPLETED:
                return BuildInfo(build_id=st.build_id, status=st.status, template_id=st.template_id, alias=st.alias, logs=logs)
            if st.status == BUILD_STATUS_FAILED:
                raise _build_failed(st, logs)
            raise SandboxException(f"template build {build_id}: unexpected status {st.status!r}")

    @staticmethod
    def get_build_status(
        build_id: str,
        offset: int = 0,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> TemplateBuildStatus:
        """A build's status with its log lines from ``offset`` on."""
        resp = _http(api_key, domain, request_timeout).request(
            "GET", f"/templates/builds/{path_segment(build_id)}", query={"offset": offset}
        )
        return TemplateBuildStatus.from_dict(resp.json())

    @staticmethod
    def cancel_build(build_id: str, api_key: Optional[str] = None, domain: Optional[str] = None,
                     request_timeout: Optional[float] = None) -> TemplateBuildStatus:
        resp = _http(api_key, domain, request_timeout).request("DELETE", f"/templates/builds/{path_segment(build_id)}")
        return TemplateBuildStatus.from_dict(resp.json())

    @staticmethod
    def list(api_key: Optional[str] = None, domain: Optional[str] = None,
             request_timeout: Optional[float] = None) -> List[TemplateInfo]:
        data = _http(api_key, domain, request_timeout).request("GET", "/templates").json() or {}
        return [TemplateInfo.from_dict(t) for t in data.get("templates") or []]

    @staticmethod
    def get(template_id: str, api_key: Optional[str] = None, domain: Optional[str] = None,
            request_timeout: Optional[float] = None) -> TemplateInfo:
        data = _http(api_key, domain, request_timeout).request("GET", f"/templates/{path_segment(template_id)}").json()
        return TemplateInfo.from_dict(data)

    @staticmethod
    def delete(template_id: str, force: bool = False, api_key: Optional[str] = None, domain: Optional[str] = None,
               request_timeout: Optional[float] = None) -> None:
        """Delete a custom template; ``force`` kills the sandboxes using it first
        (without it, ``ConflictException`` while sandboxes use it)."""
        query = {"force": "true"} if force else None
        _http(api_key, domain, request_timeout).request("DELETE", f"/templates/{path_segment(template_id)}", query=query)


class AsyncTemplate(TemplateBase):
    """``Template`` with coroutines."""

    @staticmethod
    async def build(template: TemplateBase, alias: Optional[str] = None, cpu_count: Optional[int] = None,
                    memory_mb: Optional[int] = None, disk_mb: Optional[int] = None,
                    on_build_logs: Optional[Callable[[str], Any]] = None, **kw: Any) -> BuildInfo:
        """Build and wait; ``on_build_logs`` may be a coroutine function."""
        info = await AsyncTemplate.build_in_background(template, alias, cpu_count, memory_mb, disk_mb, **{
            k: v for k, v in kw.items() if k != "build_timeout"})
        return await AsyncTemplate.wait_for_build(info.build_id, on_build_logs=on_build_logs, **{
            k: v for k, v in kw.items() if k in ("build_timeout", "api_key", "domain", "request_timeout")})

    @staticmethod
    async def build_in_background(template: TemplateBase, alias: Optional[str] = None, cpu_count: Optional[int] = None,
                                  memory_mb: Optional[int] = None, disk_mb: Optional[int] = None, **kw: Any) -> BuildInfo:
        return await _aio.call_long(Template.build_in_background, template, alias, cpu_count, memory_mb, disk_mb, **kw)

    @staticmethod
    async def wait_for_build(build_id: str, on_build_logs: Optional[Callable[[str], Any]] = None, **kw: Any) -> BuildInfo:
        import asyncio

        loop = asyncio.get_running_loop()
        pending: List[Any] = []

        def relay(line: str) -> None:
            if on_build_logs is not None:
                pending.append(asyncio.run_coroutine_threadsafe(_aio.maybe_await(on_build_logs, line), loop))

        info = await _aio.call_long(Template.wait_for_build, build_id, on_build_logs=relay, **kw)
        for f in pending:
            await asyncio.wrap_future(f)
        return info

    @staticmethod
    async def get_build_status(build_id: str, offset: int = 0, **kw: Any) -> TemplateBuildStatus:
        return await _aio.call(Template.get_build_status, build_id, offset, **kw)

    @staticmethod
    async def cancel_build(build_id: str, **kw: Any) -> TemplateBuildStatus:
        return await _aio.call(Template.cancel_build, build_id, **kw)

    @staticmethod
    async def list(**kw: Any) -> List[TemplateInfo]:
        return await _aio.call(Template.list, **kw)

    @staticmethod
    async def get(template_id: str, **kw: Any) -> TemplateInfo:
        return await _aio.call(Template.get, template_id, **kw)

    @staticmethod
    async def delete(template_id: str, force: bool = False, **kw: Any) -> None:
        await _aio.call(Template.delete, template_id, force, **kw)
