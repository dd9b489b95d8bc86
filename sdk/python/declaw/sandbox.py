"""The ``Sandbox`` class: create, connect to, inspect and kill sandboxes."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union
from urllib.parse import urlencode

from ._http import DEFAULT as DEFAULT_TIMEOUT
from ._http import HTTPClient, Response, killed_flag, new_idempotency_key, path_segment
from .commands import Commands
from .connection_config import ConnectionConfig
from .exceptions import InvalidArgumentException, NotFoundException, SandboxException
from .filesystem import Filesystem
from .models import AuditEntry, SandboxInfo, SandboxListResult, SandboxMetrics, SnapshotInfo
from .pty import Pty
from .security import ALL_TRAFFIC, NetworkPolicy, SecureEnvVar, SecurityPolicy
from .stdio import Stdio

__all__ = ["Sandbox", "SandboxQuery", "DEFAULT_TEMPLATE", "DEFAULT_SANDBOX_TIMEOUT", "MCP_PORT"]

DEFAULT_TEMPLATE = "base"
DEFAULT_SANDBOX_TIMEOUT = 300
#: Default HTTP timeout of a create: the first use of a template builds it,
#: which can take minutes (pass request_timeout= to create to override).
CREATE_REQUEST_TIMEOUT = 300.0
#: Default HTTP timeout of a snapshot or a restore (copying a filesystem).
SNAPSHOT_REQUEST_TIMEOUT = 300.0
#: Default HTTP timeout of a restore (the server allows itself 15 minutes).
RESTORE_REQUEST_TIMEOUT = 900.0
MCP_PORT = 50005
_STATES = ("live", "running", "paused", "creating", "killed")


@dataclass
class SandboxQuery:
    """Filter for ``Sandbox.list``: sandboxes whose metadata contains every
    given key/value, in any of the given states."""

    metadata: Optional[Dict[str, str]] = None
    state: Optional[List[str]] = None


class _dual:
    """A method usable on the class (``Sandbox.kill("sbx-1")``) and on an
    instance (``sbx.kill()``), each with its own implementation."""

    def __init__(self, on_class: Callable[..., Any], on_instance: Callable[..., Any]) -> None:
        self._on_class = on_class
        self._on_instance = on_instance
        functools.update_wrapper(self, on_instance)  # type: ignore[arg-type]

    def __get__(self, obj: Any, objtype: Any = None) -> Callable[..., Any]:
        if obj is None:
            return functools.partial(self._on_class, objtype)
        return functools.partial(self._on_instance, obj)


def _config(api_key: Optional[str], domain: Optional[str], request_timeout: Optional[float]) -> ConnectionConfig:
    return ConnectionConfig(api_key=api_key, domain=domain, request_timeout=request_timeout)


def _sandbox_path(sandbox_id: str) -> str:
    if not isinstance(sandbox_id, str) or not sandbox_id:
        raise InvalidArgumentException("sandbox_id must be a non-empty string")
    return f"/sandboxes/{path_segment(sandbox_id)}"


def _str_map(name: str, value: Any) -> Dict[str, str]:
    if not isinstance(value, Mapping):
        raise InvalidArgumentException(f"{name} must be a dict of strings")
    out: Dict[str, str] = {}
    for k, v in value.items():
        if isinstance(v, SecureEnvVar):
            v = v.value
        if not isinstance(k, str) or not k or not isinstance(v, str):
            raise InvalidArgumentException(f"{name} must map non-empty strings to strings; bad entry {k!r}")
        out[k] = v
    return out


def _envs_dict(envs: Any) -> Dict[str, str]:
    if isinstance(envs, (list, tuple)):
        out = {}
        for e in envs:
            if not isinstance(e, SecureEnvVar):
                raise InvalidArgumentException("envs given as a list must hold SecureEnvVar items")
            out[e.key] = e.value
        return out
    return _str_map("envs", envs)


def _time_param(value: Any) -> Optional[str]:
    """RFC 3339 for datetimes (naive ones are local time), seconds for numbers."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    return str(value)


def _long_timeout(cfg: ConnectionConfig, request_timeout: Optional[float], floor: float) -> Optional[float]:
    if request_timeout is not None:
        return request_timeout or None
    if cfg.request_timeout is None:
        return None
    return max(cfg.request_timeout, floor)


def _snapshots(data: Any) -> List[SnapshotInfo]:
    if isinstance(data, dict):
        data = data.get("snapshots") or []
    return [SnapshotInfo.from_dict(x) for x in data or [] if isinstance(x, dict)]


def _snapshot_segment(snapshot_id: Any) -> str:
    if not isinstance(snapshot_id, str) or not snapshot_id:
        raise InvalidArgumentException("snapshot_id must be a non-empty string")
    return path_segment(snapshot_id)


def _deleted(resp: Response) -> bool:
    data = resp.json()
    if isinstance(data, dict) and "deleted" in data:
        return bool(data["deleted"])
    return True


class Sandbox:
    """A Declaw sandbox. Make one with ``Sandbox.create()`` or attach to a
    running one with ``Sandbox.connect(sandbox_id)``.

    Used as a context manager, the sandbox is killed on exit.
    """

    def __init__(
        self,
        sandbox_id: str,
        connection_config: Optional[ConnectionConfig] = None,
        *,
        envd_access_token: Optional[str] = None,
        traffic_access_token: Optional[str] = None,
        sandbox_domain: Optional[str] = None,
        template_id: Optional[str] = None,
        info: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self._sandbox_id = sandbox_id
        self._path = _sandbox_path(sandbox_id)
        self._config = connection_config or ConnectionConfig()
        self._http = HTTPClient(self._config)
        self._envd_access_token = envd_access_token
        self._traffic_access_token = traffic_access_token
        self._sandbox_domain = sandbox_domain
        self._template_id = template_id
        self._create_info: Dict[str, Any] = dict(info or {})
        self._commands = Commands(self)
        self._files = Filesystem(self)
        self._pty = Pty(self)
        self._stdio = Stdio(self)

    # ------------------------------------------------------------ plumbing
    def _request(self, method: str, path: str, **kw: Any) -> Response:
        return self._http.request(method, self._path + path, **kw)

    # ---------------------------------------------------------- properties
    @property
    def sandbox_id(self) -> str:
        return self._sandbox_id

    @property
    def template_id(self) -> Optional[str]:
        return self._template_id

    @property
    def envd_access_token(self) -> Optional[str]:
        return self._envd_access_token

    @property
    def traffic_access_token(self) -> Optional[str]:
        return self._traffic_access_token

    @property
    def sandbox_domain(self) -> Optional[str]:
        return self._sandbox_domain

    @property
    def connection_config(self) -> ConnectionConfig:
        return self._config

    @property
    def commands(self) -> Commands:
        return self._commands

    @property
    def files(self) -> Filesystem:
        return self._files

    @property
    def pty(self) -> Pty:
        return self._pty

    @property
    def stdio(self) -> Stdio:
        return self._stdio

    @property
    def envd_api_url(self) -> str:
        """Base URL of the sandbox's per-sandbox API."""
        return self._config.api_url + self._path

    def get_host(self, port: int) -> str:
        """URL that proxies to ``port`` inside the sandbox (API key required)."""
        return f"{self.envd_api_url}/ports/{int(port)}"

    def get_mcp_url(self) -> str:
        return self.get_host(MCP_PORT) + "/mcp"

    def create_port_token(
        self, port: int, ttl_seconds: Optional[int] = None, request_timeout: Optional[float] = None
    ) -> Dict[str, Any]:
        """Sign a short-lived token that opens ``port`` of this sandbox without
        the API key (for browsers). Returns ``{token, port, expires_at, path,
        url}``; ``url`` is the absolute port URL with the token. The token dies
        with the sandbox and after ``ttl_seconds`` (default 3600, max 86400)."""
        body: Dict[str, Any] = {"port": int(port)}
        if ttl_seconds is not None:
            body["ttl_seconds"] = int(ttl_seconds)
        kw: Dict[str, Any] = {} if request_timeout is None else {"timeout": request_timeout}
        out = self._request("POST", "/port-tokens", json=body, **kw).json()
        out["url"] = self._config.api_url + out["path"]
        return out

    def get_signed_host(self, port: int, ttl_seconds: Optional[int] = None) -> str:
        """``get_host(port)`` with a port token in it: a URL a browser can open
        as is (the server then keeps the token in a cookie for that port)."""
        return self.create_port_token(port, ttl_seconds)["url"]

    def download_url(self, path: str, user: Optional[str] = None) -> str:
        """URL for ``GET`` of a file's raw bytes (send the API key header)."""
        return self._http.absolute_url(self._path + "/files/raw", {"path": path, "username": user})

    def upload_url(self, path: str, user: Optional[str] = None) -> str:
        """URL for ``PUT`` of a file's raw bytes (send the API key header)."""
        return self.download_url(path, user)

    # ------------------------------------------------------------- create
    @classmethod
    def create(
        cls,
        template: str = DEFAULT_TEMPLATE,
        timeout: int = DEFAULT_SANDBOX_TIMEOUT,
        metadata: Optional[Dict[str, str]] = None,
        envs: Optional[Union[Dict[str, str], Sequence[SecureEnvVar]]] = None,
        secure: bool = True,
        allow_internet_access: bool = True,
        network: Optional[Union[NetworkPolicy, Dict[str, Any]]] = None,
        security: Optional[Union[SecurityPolicy, Dict[str, Any]]] = None,
        lifecycle: Optional[Dict[str, Any]] = None,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
        cpu_count: Optional[float] = None,
        memory_mb: Optional[int] = None,
        disk_mb: Optional[int] = None,
        volumes: Optional[Sequence[Any]] = None,
    ) -> "Sandbox":
        """Create a sandbox (``POST /sandboxes``) and return it once it runs.

        Args:
            template: template name or id (default ``"base"``).
            timeout: seconds until the sandbox is killed (0 = never).
            metadata: your own key/value labels (filterable in ``list``).
            envs: environment variables of every process in the sandbox.
            secure: keep the sandbox's API behind authentication.
            allow_internet_access: False blocks all egress
                (``network={"deny_out": ["0.0.0.0/0"]}``, which overrides
                ``network``).
            network: egress rules (``NetworkPolicy`` or its dict form).
            security: ``SecurityPolicy`` (sent as ``{"policy_json": ...}``);
                its ``network`` is used when ``network`` is not given.
            lifecycle: ``{"on_timeout": "kill"|"pause", "auto_resume": bool}``.
            volumes: ``VolumeAttachment`` list (``vol.attach("/data")``),
                unpacked into the sandbox before this returns.
            cpu_count, memory_mb, disk_mb: the sandbox's vCPUs, memory (MiB,
                everything in it) and writable disk (MiB; writes past it fail
                with ENOSPC inside). None: the template's, else the server's
                defaults (2, 512, 2048). Past the server's maxima the server
                answers 400 (``InvalidArgumentException``, code
                ``limit_exceeded``); with no room on the host, 503
                (``RateLimitException``, code ``insufficient_capacity``,
                ``retry_after`` set) after the usual retries.
            request_timeout: HTTP timeout of this call and of the sandbox's
                later calls (default 30 s; the create itself waits at least
                ``CREATE_REQUEST_TIMEOUT`` = 300 s unless this is given, since
                the first use of a template builds it).

        The request carries an ``Idempotency-Key``; retries after timeouts
        or 5xx reuse it, so one call never creates two sandboxes.
        """
        cfg = _config(api_key, domain, request_timeout)
        body = cls._create_body(
            template, timeout, metadata, envs, secure, allow_internet_access, network, security, lifecycle
        )
        body.update(_resources_body(cpu_count, memory_mb, disk_mb))
        if volumes:
            # VolumeAttachment objects or their dict form; unpacked at create.
            body["volumes"] = [v.to_dict() if hasattr(v, "to_dict") else dict(v) for v in volumes]
        http = HTTPClient(cfg)
        if request_timeout is not None:
            create_timeout = cfg.request_timeout
        elif cfg.request_timeout is None:
            create_timeout = None
        else:
            create_timeout = max(cfg.request_timeout, CREATE_REQUEST_TIMEOUT)
        resp = http.request(
            "POST", "/sandboxes", json=body, idempotency_key=new_idempotency_key(), timeout=create_timeout
        )
        data = resp.json() or {}
        sandbox_id = data.get("sandbox_id")
        if not sandbox_id:
            raise SandboxException(f"create answered without a sandbox_id: {data!r}", status=resp.status)
        return cls(
            sandbox_id,
            cfg,
            envd_access_token=data.get("envd_access_token"),
            traffic_access_token=data.get("traffic_access_token"),
            sandbox_domain=data.get("sandbox_domain"),
            template_id=data.get("template_id") or template,
            info=data,
        )

    @staticmethod
    def _create_body(
        template: str,
        timeout: int,
        metadata: Any,
        envs: Any,
        secure: bool,
        allow_internet_access: bool,
        network: Any,
        security: Any,
        lifecycle: Any,
    ) -> Dict[str, Any]:
        if not isinstance(template, str) or not template:
            raise InvalidArgumentException("template must be a non-empty string")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
            raise InvalidArgumentException(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        if isinstance(timeout, float) and timeout.is_integer():
            timeout = int(timeout)
        body: Dict[str, Any] = {"template": template, "timeout": timeout, "secure": bool(secure)}
        if metadata:
            body["metadata"] = _str_map("metadata", metadata)
        if envs:
            body["envs"] = _envs_dict(envs)

        policy: Optional[SecurityPolicy] = None
        if security is not None:
            if isinstance(security, Mapping):
                try:
                    policy = SecurityPolicy.from_dict(security)
                except ValueError as e:
                    raise InvalidArgumentException(str(e)) from e
            elif isinstance(security, SecurityPolicy):
                policy = security
            else:
                raise InvalidArgumentException("security must be a SecurityPolicy or a dict")
            body["security"] = {"policy_json": policy.to_json()}

        net: Optional[Dict[str, Any]] = None
        if network is not None:
            if isinstance(network, NetworkPolicy):
                net = network.to_dict()
            elif isinstance(network, Mapping):
                try:
                    NetworkPolicy.from_dict(network)  # validate only; send as given
                except ValueError as e:
                    raise InvalidArgumentException(str(e)) from e
                net = dict(network)
            else:
                raise InvalidArgumentException("network must be a NetworkPolicy or a dict")
        elif policy is not None and policy.network is not None:
            net = policy.network.to_dict()
        if not allow_internet_access:
            net = {"deny_out": [ALL_TRAFFIC]}
        if net is not None:
            body["network"] = net

        if lifecycle is not None:
            if not isinstance(lifecycle, Mapping):
                raise InvalidArgumentException("lifecycle must be a dict")
            unknown = set(lifecycle) - {"on_timeout", "auto_resume"}
            if unknown:
                raise InvalidArgumentException(f"lifecycle: unknown field(s) {', '.join(sorted(unknown))}")
            if lifecycle.get("on_timeout", "kill") not in ("kill", "pause"):
                raise InvalidArgumentException("lifecycle.on_timeout must be 'kill' or 'pause'")
            if not isinstance(lifecycle.get("auto_resume", False), bool):
                raise InvalidArgumentException("lifecycle.auto_resume must be a bool")
            body["lifecycle"] = dict(lifecycle)
        return body

    # ------------------------------------------------------------ connect
    @classmethod
    def connect(
        cls,
        sandbox_id: str,
        timeout: Optional[int] = None,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> "Sandbox":
        """Attach to a running sandbox (``GET /sandboxes/{id}``); with
        ``timeout`` also reset its time to live."""
        cfg = _config(api_key, domain, request_timeout)
        data = HTTPClient(cfg).request("GET", _sandbox_path(sandbox_id)).json() or {}
        sbx = cls(sandbox_id, cfg, template_id=data.get("template_id"), info=data)
        if timeout is not None:
            sbx.set_timeout(timeout)
        return sbx

    # --------------------------------------------------------------- list
    @classmethod
    def list(
        cls,
        query: Optional[Union[SandboxQuery, Dict[str, Any]]] = None,
        limit: Optional[int] = None,
        next_token: Optional[str] = None,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> SandboxListResult:
        """One page of your sandboxes (``GET /sandboxes``).

        ``query`` filters by ``metadata`` (every pair must match) and
        ``state`` (any of). Follow ``result.next_token`` (or use
        ``result.iter_all()``) for more pages.
        """
        cfg = _config(api_key, domain, request_timeout)
        metadata: Optional[Dict[str, str]] = None
        states: Optional[List[str]] = None
        if query is not None:
            if isinstance(query, Mapping):
                unknown = set(query) - {"metadata", "state"}
                if unknown:
                    raise InvalidArgumentException(f"query: unknown field(s) {', '.join(sorted(unknown))}")
                query = SandboxQuery(metadata=query.get("metadata"), state=query.get("state"))
            if query.metadata:
                metadata = _str_map("query.metadata", query.metadata)
            if query.state:
                states = [query.state] if isinstance(query.state, str) else list(query.state)
                bad = [s for s in states if s not in _STATES]
                if bad:
                    raise InvalidArgumentException(f"query.state: unknown state(s) {bad}; valid: {', '.join(_STATES)}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidArgumentException("limit must be a positive integer")
        params: Dict[str, Any] = {
            "metadata": urlencode(sorted(metadata.items())) if metadata else None,
            "state": states,
            "limit": limit,
            "next_token": next_token,
        }
        data = HTTPClient(cfg).request("GET", "/sandboxes", query=params).json()
        if isinstance(data, list):
            items, token = data, None
        else:
            data = data or {}
            items, token = data.get("sandboxes") or [], data.get("next_token")

        def fetch(tok: str) -> SandboxListResult:
            return cls.list(query, limit, tok, api_key=api_key, domain=domain, request_timeout=request_timeout)

        return SandboxListResult([SandboxInfo.from_dict(s) for s in items], token, fetch)

    # --------------------------------------------------------------- kill
    def _kill_instance(self, wait: bool = False, request_timeout: Optional[float] = None) -> bool:
        """Kill this sandbox. By default the kill is queued
        (``DELETE ?async=true``); ``wait=True`` waits until it is gone.
        Returns False if the sandbox did not exist."""
        return type(self)._kill_by_path(self._http, self._path, wait, request_timeout)

    def _kill_class(
        cls,
        sandbox_id: str,
        wait: bool = False,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> bool:
        """Kill the sandbox ``sandbox_id``; False if it did not exist."""
        http = HTTPClient(_config(api_key, domain, request_timeout))
        return cls._kill_by_path(http, _sandbox_path(sandbox_id), wait, None)

    @staticmethod
    def _kill_by_path(http: HTTPClient, path: str, wait: bool, request_timeout: Optional[float]) -> bool:
        try:
            resp = http.request(
                "DELETE",
                path,
                query=None if wait else {"async": "true"},
                timeout=request_timeout if request_timeout is not None else DEFAULT_TIMEOUT,
            )
        except NotFoundException:
            return False
        return killed_flag(resp)

    kill = _dual(_kill_class, _kill_instance)

    @classmethod
    def kill_by_id(cls, sandbox_id: str, **kw: Any) -> bool:
        """Same as ``Sandbox.kill(sandbox_id, ...)``."""
        return cls.kill(sandbox_id, **kw)

    @classmethod
    def kill_many(
        cls,
        sandbox_ids: Iterable[str],
        wait: bool = False,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Dict[str, Dict[str, Any]]:
        """Kill several sandboxes (``POST /sandboxes/kill-many``); returns
        ``{sandbox_id: {"killed"|"queued": bool} or {"error": str}}``."""
        ids = [str(i) for i in sandbox_ids]
        if not ids:
            return {}
        http = HTTPClient(_config(api_key, domain, request_timeout))
        resp = http.request(
            "POST",
            "/sandboxes/kill-many",
            query=None if wait else {"async": "true"},
            json={"sandbox_ids": ids},
            retry=True,  # killing is idempotent
        )
        data = resp.json() or {}
        return dict(data.get("results") or {}) if isinstance(data, dict) else {}

    # ---------------------------------------------------------- timeouts
    def _set_timeout_instance(self, timeout: int, request_timeout: Optional[float] = None) -> None:
        """Reset the time to live to ``timeout`` seconds from now (0 = none)."""
        type(self)._set_timeout_path(self._http, self._path, timeout, request_timeout)

    def _set_timeout_class(
        cls,
        sandbox_id: str,
        timeout: int,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> None:
        cls._set_timeout_path(HTTPClient(_config(api_key, domain, request_timeout)), _sandbox_path(sandbox_id), timeout, None)

    @staticmethod
    def _set_timeout_path(http: HTTPClient, path: str, timeout: int, request_timeout: Optional[float]) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
            raise InvalidArgumentException(f"timeout must be an integer number of seconds >= 0, got {timeout!r}")
        http.request(
            "PATCH",
            path + "/timeout",
            json={"timeout": timeout},
            retry=True,  # setting the same deadline again is harmless
            timeout=request_timeout if request_timeout is not None else DEFAULT_TIMEOUT,
        )

    set_timeout = _dual(_set_timeout_class, _set_timeout_instance)

    # -------------------------------------------------------------- info
    def _get_info_instance(self) -> SandboxInfo:
        """State, template, metadata and times of this sandbox."""
        return SandboxInfo.from_dict(self._request("GET", "").json() or {})

    def _get_info_class(
        cls,
        sandbox_id: str,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> SandboxInfo:
        http = HTTPClient(_config(api_key, domain, request_timeout))
        return SandboxInfo.from_dict(http.request("GET", _sandbox_path(sandbox_id)).json() or {})

    get_info = _dual(_get_info_class, _get_info_instance)

    def is_running(self, request_timeout: Optional[float] = None) -> bool:
        """True while the sandbox runs (``GET .../status``); False once it is
        gone or paused."""
        try:
            data = self._request(
                "GET", "/status", timeout=request_timeout if request_timeout is not None else DEFAULT_TIMEOUT
            ).json()
        except NotFoundException:
            return False
        return bool((data or {}).get("is_running"))

    # ----------------------------------------------------------- metrics
    def _get_metrics_instance(self, start: Any = None, end: Any = None) -> List[SandboxMetrics]:
        """Resource samples (``GET .../metrics``), oldest first."""
        return type(self)._metrics_path(self._http, self._path, start, end)

    def _get_metrics_class(
        cls,
        sandbox_id: str,
        start: Any = None,
        end: Any = None,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> List[SandboxMetrics]:
        return cls._metrics_path(HTTPClient(_config(api_key, domain, request_timeout)), _sandbox_path(sandbox_id), start, end)

    @staticmethod
    def _metrics_path(http: HTTPClient, path: str, start: Any, end: Any) -> List[SandboxMetrics]:
        data = http.request("GET", path + "/metrics", query={"start": _time_param(start), "end": _time_param(end)}).json()
        if isinstance(data, dict):
            data = data.get("metrics", [data]) if "metrics" in data else [data]
        return [SandboxMetrics.from_dict(m) for m in data or [] if isinstance(m, dict)]

    get_metrics = _dual(_get_metrics_class, _get_metrics_instance)

    # ------------------------------------------------------ pause/resume
    def _pause_instance(self, request_timeout: Optional[float] = None) -> None:
        """Freeze the sandbox (``POST .../pause``, answer ``{}``): its
        processes stop using CPU, memory, files and network policy stay, and
        the timeout stops running. Pausing a paused sandbox is a no-op;
        ``ConflictException`` (code ``not_supported``) if it cannot be paused."""
        type(self)._pause_path(self._http, self._path, request_timeout)

    def _pause_class(
        cls,
        sandbox_id: str,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> None:
        cls._pause_path(HTTPClient(_config(api_key, domain, request_timeout)), _sandbox_path(sandbox_id), None)

    @staticmethod
    def _pause_path(http: HTTPClient, path: str, request_timeout: Optional[float]) -> None:
        http.request(
            "POST", path + "/pause", json={}, retry=True,  # pausing twice is a no-op
            timeout=_long_timeout(http.config, request_timeout, 60.0),
        )

    pause = _dual(_pause_class, _pause_instance)

    def _resume_instance(self, timeout: Optional[int] = None, request_timeout: Optional[float] = None) -> None:
        """Continue a paused sandbox (``POST .../resume``, answer ``{}``),
        with its processes, files and network policy. Its timeout runs again
        with what was left at the pause, or ``timeout`` seconds if given."""
        type(self)._resume_path(self._http, self._path, timeout, request_timeout)

    def _resume_class(
        cls,
        sandbox_id: str,
        timeout: Optional[int] = None,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> "Sandbox":
        """Resume the sandbox ``sandbox_id`` and return it."""
        cfg = _config(api_key, domain, request_timeout)
        http = HTTPClient(cfg)
        cls._resume_path(http, _sandbox_path(sandbox_id), timeout, None)
        return cls(sandbox_id, cfg)

    @staticmethod
    def _resume_path(http: HTTPClient, path: str, timeout: Optional[int], request_timeout: Optional[float]) -> None:
        body: Dict[str, Any] = {}
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
                raise InvalidArgumentException(f"timeout must be an integer number of seconds >= 0, got {timeout!r}")
            body["timeout"] = timeout
        http.request(
            "POST", path + "/resume", json=body, retry=True,  # resuming a running sandbox is harmless
            timeout=_long_timeout(http.config, request_timeout, 60.0),
        )

    resume = _dual(_resume_class, _resume_instance)

    # ---------------------------------------------------------- snapshots
    def create_snapshot(self, memory: bool = False, request_timeout: Optional[float] = None) -> SnapshotInfo:
        """Snapshot the sandbox's filesystem (``POST .../snapshot``, 201
        ``SnapshotInfo``). ``memory=True`` asks for a memory snapshot, which
        this runtime refuses (``ConflictException``, code ``not_supported``).
        Not retried (a retry could make a second snapshot)."""
        body: Dict[str, Any] = {"memory": True} if memory else {}
        resp = self._request(
            "POST", "/snapshot", json=body, retry=False,
            timeout=_long_timeout(self._config, request_timeout, SNAPSHOT_REQUEST_TIMEOUT),
        )
        data = resp.json() or {}
        info = SnapshotInfo.from_dict(data if isinstance(data, dict) else {})
        if not info.snapshot_id:
            raise SandboxException(f"snapshot answered without a snapshot_id: {data!r}", status=resp.status)
        return info

    snapshot = create_snapshot

    def _list_snapshots_instance(self) -> List[SnapshotInfo]:
        """This sandbox's snapshots, newest first (``GET .../snapshots``)."""
        return _snapshots(self._request("GET", "/snapshots").json())

    def _list_snapshots_class(
        cls,
        sandbox_id: str,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> List[SnapshotInfo]:
        http = HTTPClient(_config(api_key, domain, request_timeout))
        return _snapshots(http.request("GET", _sandbox_path(sandbox_id) + "/snapshots").json())

    list_snapshots = _dual(_list_snapshots_class, _list_snapshots_instance)

    def _delete_snapshot_instance(self, snapshot_id: str) -> bool:
        """Delete a snapshot (``DELETE .../snapshots/{sid}``); idempotent:
        False if it did not exist."""
        return _deleted(self._request("DELETE", "/snapshots/" + _snapshot_segment(snapshot_id)))

    def _delete_snapshot_class(
        cls,
        sandbox_id: str,
        snapshot_id: str,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> bool:
        http = HTTPClient(_config(api_key, domain, request_timeout))
        return _deleted(http.request("DELETE", _sandbox_path(sandbox_id) + "/snapshots/" + _snapshot_segment(snapshot_id)))

    delete_snapshot = _dual(_delete_snapshot_class, _delete_snapshot_instance)

    def _restore_instance(
        self, snapshot_id: Optional[str] = None, request_timeout: Optional[float] = None, *, fork: bool = False
    ) -> "Sandbox":
        """Restore THIS sandbox in place to one of its snapshots (see
        ``Sandbox.restore``); returns a Sandbox of the same id (this object
        stays usable too). ``fork=True`` starts a new sandbox instead."""
        return type(self)._restore_with(self._config, self._sandbox_id, snapshot_id, request_timeout, fork)

    def _restore_class(
        cls,
        sandbox_id: str,
        snapshot_id: Optional[str] = None,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
        *,
        fork: bool = False,
    ) -> "Sandbox":
        """Restore sandbox ``sandbox_id`` in place to one of its snapshots
        (``POST /sandboxes/{id}/restore?snapshot_id=``, 200 ``{sandbox_id,
        snapshot_id, node_id}``) and return a Sandbox connected to it: the
        SAME sandbox id, with the snapshot's files (files written since are
        gone), everything that ran in it stopped, and its metadata, envs,
        policy and timeout kept. A killed sandbox comes back under its id.
        Without ``snapshot_id`` the server picks one (pause > periodic >
        manual, the most recent). ``fork=True`` (``&fork=true``, 201) leaves
        the sandbox alone and returns a NEW sandbox made from the snapshot.
        Not retried (a restore stops what runs; a fork makes a sandbox)."""
        return cls._restore_with(_config(api_key, domain, request_timeout), sandbox_id, snapshot_id, request_timeout, fork)

    @classmethod
    def _restore_with(
        cls,
        cfg: ConnectionConfig,
        sandbox_id: str,
        snapshot_id: Optional[str],
        request_timeout: Optional[float],
        fork: bool = False,
    ) -> "Sandbox":
        if snapshot_id is not None:
            _snapshot_segment(snapshot_id)
        http = HTTPClient(cfg)
        resp = http.request(
            "POST",
            _sandbox_path(sandbox_id) + "/restore",
            query={"snapshot_id": snapshot_id, "fork": "true" if fork else None},
            json={},
            retry=False,
            timeout=_long_timeout(cfg, request_timeout, RESTORE_REQUEST_TIMEOUT),
        )
        data = resp.json() or {}
        if not isinstance(data, dict):
            data = {}
        target = data.get("sandbox_id")
        if fork and not target:
            raise SandboxException(f"fork answered without a sandbox_id: {data!r}", status=resp.status)
        # In place, the answer names the same sandbox (Declaw's SDK reconnects
        # to the id it restored); it is followed if a server names another.
        target = str(target or sandbox_id)
        info = data.get("sandbox") if isinstance(data.get("sandbox"), dict) else None
        if info is None:
            info = http.request("GET", _sandbox_path(target)).json() or {}
        return cls(
            target,
            cfg,
            envd_access_token=data.get("envd_access_token"),
            traffic_access_token=data.get("traffic_access_token"),
            sandbox_domain=data.get("sandbox_domain"),
            template_id=data.get("template_id") or info.get("template_id"),
            info={**info, **data},
        )

    restore = _dual(_restore_class, _restore_instance)

    @property
    def restored_from(self) -> Optional[str]:
        """The snapshot id this sandbox was restored from (``restore``), else None."""
        return self._create_info.get("snapshot_id")

    # -------------------------------------------------------------- audit
    def audit_events(
        self,
        limit: Optional[int] = None,
        type: Optional[str] = None,
        since: Any = None,
        until: Any = None,
        cursor: Optional[str] = None,
    ) -> List[AuditEntry]:
        """This sandbox's audit events (``GET /sandboxes/{id}/audit``), oldest
        first. ``type`` filters by event type (comma-separated for several);
        ``since``/``until`` are datetimes or RFC 3339 strings; ``cursor`` is
        the id of the last event already seen (next page)."""
        query = {"limit": limit, "type": type, "since": _time_param(since), "until": _time_param(until),
                 "cursor": cursor}
        data = self._request("GET", "/audit", query=query).json()
        if isinstance(data, dict):
            data = data.get("events") or data.get("entries") or []
        return [AuditEntry.from_dict(e) for e in data or [] if isinstance(e, dict)]

    get_audit_log = audit_events

    @property
    def audit(self) -> "AuditLog":
        """This sandbox's audit trail: ``sbx.audit.list(...)``."""
        return AuditLog(self)

    # ------------------------------------------------------------ network
    def update_network(
        self,
        network: Optional[Union[NetworkPolicy, Dict[str, Any]]] = None,
        *,
        allow_out: Optional[Sequence[str]] = None,
        deny_out: Optional[Sequence[str]] = None,
        allow_internet_access: Optional[bool] = None,
    ) -> SandboxInfo:
        """Replace the egress policy of the running sandbox
        (``PUT /sandboxes/{id}/network``). Established connections that the
        new policy denies are cut. Give a ``NetworkPolicy`` (or its dict), or
        ``allow_out``/``deny_out`` lists; ``allow_internet_access=False`` means
        deny all."""
        if network is not None and (allow_out is not None or deny_out is not None):
            raise InvalidArgumentException("give either network or allow_out/deny_out, not both")
        if isinstance(network, NetworkPolicy):
            body = network.to_dict()
        elif isinstance(network, dict):
            NetworkPolicy.from_dict(network)  # validate
            body = dict(network)
        elif network is None:
            body = {}
            if allow_out is not None:
                body["allow_out"] = list(allow_out)
            if deny_out is not None:
                body["deny_out"] = list(deny_out)
            NetworkPolicy.from_dict(body)
        else:
            raise InvalidArgumentException("network must be a NetworkPolicy or a dict")
        if allow_internet_access is False:
            body = {"deny_out": [ALL_TRAFFIC]}
        body = {k: v for k, v in body.items() if k in ("allow_out", "deny_out") and v is not None}
        return SandboxInfo.from_dict(self._request("PUT", "/network", json=body).json() or {})

    # ------------------------------------------------------------ context
    def close(self) -> None:
        """No-op (connections are pooled process-wide)."""

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.kill()
        except SandboxException:
            if exc_type is None:
                raise

    def __repr__(self) -> str:
        return f"Sandbox(sandbox_id={self._sandbox_id!r}, api_url={self._config.api_url!r})"


class AuditLog:
    """The audit trail of one sandbox (``sbx.audit``)."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    def list(
        self,
        limit: Optional[int] = None,
        type: Optional[str] = None,
        since: Any = None,
        until: Any = None,
        cursor: Optional[str] = None,
    ) -> List[AuditEntry]:
        """Events oldest first; see ``Sandbox.audit_events``."""
        return self._sandbox.audit_events(limit=limit, type=type, since=since, until=until, cursor=cursor)

    def __iter__(self):
        """Every event, following the cursor page by page."""
        cursor = None
        while True:
            page = self.list(limit=500, cursor=cursor)
            yield from page
            if len(page) < 500:
                return
            cursor = str(page[-1].id) if getattr(page[-1], "id", None) is not None else None
            if cursor is None:
                return


def _resources_body(cpu_count: Any, memory_mb: Any, disk_mb: Any) -> Dict[str, Any]:
    """The create's resource fields, checked for type and sign (the server
    checks them against its limits)."""
    out: Dict[str, Any] = {}
    for name, value, whole in (("cpu_count", cpu_count, False), ("memory_mb", memory_mb, True), ("disk_mb", disk_mb, True)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InvalidArgumentException(f"{name} must be a positive number, got {value!r}")
        if whole:
            if isinstance(value, float) and not value.is_integer():
                raise InvalidArgumentException(f"{name} must be a whole number of MiB, got {value!r}")
            value = int(value)
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        out[name] = value
    return out
