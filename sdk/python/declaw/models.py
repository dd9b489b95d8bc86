"""Plain data returned by the SDK."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

__all__ = [
    "SandboxInfo",
    "SandboxListResult",
    "SandboxMetrics",
    "CommandResult",
    "ProcessInfo",
    "EntryInfo",
    "WriteInfo",
    "AuditEntry",
    "FilesystemEvent",
    "FilesystemEventType",
    "SnapshotInfo",
    "parse_time",
]

_FRACTION = re.compile(r"(\.\d+)")


def parse_time(value: Any) -> Optional[datetime]:
    """Parse an ISO-8601 / RFC 3339 timestamp (``Z`` suffix and up to 9
    fractional digits accepted); returns None for empty or unparsable input."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    text = str(value).strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # fromisoformat before 3.11 takes exactly 3 or 6 fractional digits
    text = _FRACTION.sub(lambda m: m.group(1)[:7].ljust(7, "0"), text, count=1)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


def _extra(data: Mapping[str, Any], known: tuple) -> Dict[str, Any]:
    return {k: v for k, v in data.items() if k not in known}


@dataclass
class SandboxInfo:
    """What the API knows about one sandbox."""

    sandbox_id: str
    template_id: Optional[str] = None
    name: Optional[str] = None
    metadata: Dict[str, str] = field(default_factory=dict)
    started_at: Optional[datetime] = None
    end_at: Optional[datetime] = None
    state: Optional[str] = None
    envs: Optional[Dict[str, str]] = None
    timeout: Optional[int] = None
    resources: Optional["SandboxResources"] = None
    oom_kills: int = 0
    last_oom_at: Optional[datetime] = None
    end_reason: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    _KNOWN = ("sandbox_id", "template_id", "name", "metadata", "started_at", "end_at", "state", "envs", "timeout",
              "resources", "oom_kills", "last_oom_at", "end_reason")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SandboxInfo":
        return cls(
            sandbox_id=str(data.get("sandbox_id") or data.get("id") or ""),
            template_id=data.get("template_id"),
            name=data.get("name") or data.get("alias"),
            metadata=dict(data.get("metadata") or {}),
            started_at=parse_time(data.get("started_at")),
            end_at=parse_time(data.get("end_at")),
            state=data.get("state"),
            envs=data.get("envs"),
            timeout=data.get("timeout"),
            resources=SandboxResources.from_dict(data["resources"]) if isinstance(data.get("resources"), Mapping) else None,
            oom_kills=int(data.get("oom_kills") or 0),
            last_oom_at=parse_time(data.get("last_oom_at")),
            end_reason=data.get("end_reason"),
            extra=_extra(data, cls._KNOWN),
        )


@dataclass
class SandboxResources:
    """A sandbox's limits: ``vcpus``, ``memory_mb`` (everything in the
    sandbox), ``disk_mb`` (what it may write over its template) and
    ``pids`` (processes and threads)."""

    vcpus: Optional[float] = None
    memory_mb: Optional[int] = None
    disk_mb: Optional[int] = None
    pids: Optional[int] = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SandboxResources":
        return cls(vcpus=data.get("vcpus"), memory_mb=data.get("memory_mb"), disk_mb=data.get("disk_mb"), pids=data.get("pids"))


class SandboxListResult:
    """One page of ``Sandbox.list``: ``sandboxes`` plus ``next_token``
    (None on the last page). Iterating yields this page's sandboxes;
    ``iter_all()`` follows ``next_token`` through every page."""

    def __init__(
        self,
        sandboxes: List[SandboxInfo],
        next_token: Optional[str],
        fetch_next: Optional[Callable[[str], "SandboxListResult"]] = None,
    ) -> None:
        self.sandboxes = sandboxes
        self.next_token = next_token or None
        self._fetch_next = fetch_next

    @property
    def has_next(self) -> bool:
        return self.next_token is not None

    def next_page(self) -> Optional["SandboxListResult"]:
        if self.next_token is None or self._fetch_next is None:
            return None
        return self._fetch_next(self.next_token)

    def iter_all(self) -> Iterator[SandboxInfo]:
        page: Optional[SandboxListResult] = self
        while page is not None:
            yield from page.sandboxes
            page = page.next_page()

    def __iter__(self) -> Iterator[SandboxInfo]:
        return iter(self.sandboxes)

    def __len__(self) -> int:
        return len(self.sandboxes)

    def __getitem__(self, i: int) -> SandboxInfo:
        return self.sandboxes[i]

    def __repr__(self) -> str:
        return f"SandboxListResult(sandboxes={self.sandboxes!r}, next_token={self.next_token!r})"


@dataclass
class SandboxMetrics:
    timestamp: Optional[datetime] = None
    cpu_usage_percent: Optional[float] = None
    memory_usage_mb: Optional[float] = None
    disk_usage_mb: Optional[float] = None
    cpu_count: Optional[float] = None
    memory_limit_mb: Optional[float] = None
    disk_limit_mb: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SandboxMetrics":
        known = ("timestamp", "cpu_usage_percent", "memory_usage_mb", "disk_usage_mb", "cpu_count", "memory_limit_mb", "disk_limit_mb")
        return cls(
            timestamp=parse_time(data.get("timestamp")),
            cpu_usage_percent=data.get("cpu_usage_percent"),
            memory_usage_mb=data.get("memory_usage_mb"),
            disk_usage_mb=data.get("disk_usage_mb"),
            cpu_count=data.get("cpu_count"),
            memory_limit_mb=data.get("memory_limit_mb"),
            disk_limit_mb=data.get("disk_limit_mb"),
            extra=_extra(data, known),
        )


@dataclass
class CommandResult:
    """Outcome of a finished command. A non-zero ``exit_code`` is data,
    not an error (only ``CommandHandle.wait`` raises on it)."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    error: Optional[str] = None
    pid: Optional[int] = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CommandResult":
        ec = data.get("exit_code")
        return cls(
            stdout=data.get("stdout") or "",
            stderr=data.get("stderr") or "",
            exit_code=int(ec) if ec is not None else -1,
            error=data.get("error") or None,
            pid=data.get("pid"),
        )


@dataclass
class ProcessInfo:
    """A running process, as listed by ``commands.list()``."""

    pid: int
    cmd: str = ""
    is_pty: bool = False
    envs: Dict[str, str] = field(default_factory=dict)
    tag: Optional[str] = None
    cwd: Optional[str] = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ProcessInfo":
        return cls(
            pid=int(data.get("pid", 0)),
            cmd=data.get("cmd") or "",
            is_pty=bool(data.get("is_pty", False)),
            envs=dict(data.get("envs") or {}),
            tag=data.get("tag") or None,
            cwd=data.get("cwd") or None,
        )


@dataclass
class EntryInfo:
    """A file system entry. ``type`` is ``"file"``, ``"dir"`` or ``"symlink"``."""

    name: str
    path: str
    type: str = "file"
    size: int = 0
    mode: Optional[int] = None
    permissions: Optional[str] = None
    owner: Optional[str] = None
    group: Optional[str] = None
    modified_time: Optional[datetime] = None
    symlink_target: Optional[str] = None

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EntryInfo":
        return cls(
            name=data.get("name") or "",
            path=data.get("path") or "",
            type=data.get("type") or "file",
            size=int(data.get("size") or 0),
            mode=data.get("mode"),
            permissions=data.get("permissions"),
            owner=data.get("owner"),
            group=data.get("group"),
            modified_time=parse_time(data.get("modified_time")),
            symlink_target=data.get("symlink_target") or None,
        )


@dataclass
class WriteInfo:
    """Result of a write: the path written and its size in bytes."""

    path: str
    size: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WriteInfo":
        return cls(path=data.get("path") or "", size=int(data.get("size") or 0))


@dataclass
class AuditEntry:
    """One audit event of a sandbox (fields the server does not send are None;
    everything else it sends is kept in ``extra``)."""

    timestamp: Optional[datetime] = None
    type: Optional[str] = None
    id: Optional[int] = None
    sandbox_id: Optional[str] = None
    data: Any = None
    method: Optional[str] = None
    url: Optional[str] = None
    status_code: Optional[int] = None
    pii_redactions: Optional[int] = None
    injection_blocks: Optional[int] = None
    transformations_applied: Optional[int] = None
    direction: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AuditEntry":
        known = (
            "timestamp",
            "type",
            "id",
            "sandbox_id",
            "data",
            "method",
            "url",
            "status_code",
            "pii_redactions",
            "injection_blocks",
            "transformations_applied",
            "direction",
        )
        return cls(
            timestamp=parse_time(data.get("timestamp")),
            type=data.get("type") or data.get("event"),
            id=data.get("id"),
            sandbox_id=data.get("sandbox_id"),
            data=data.get("data"),
            method=data.get("method"),
            url=data.get("url"),
            status_code=data.get("status_code"),
            pii_redactions=data.get("pii_redactions"),
            injection_blocks=data.get("injection_blocks"),
            transformations_applied=data.get("transformations_applied"),
            direction=data.get("direction"),
            extra=_extra(data, known),
        )


class FilesystemEventType(str, Enum):
    """Kinds of ``FilesystemEvent`` (they compare equal to their strings:
    ``FilesystemEventType.CREATE == "create"``)."""

    CREATE = "create"
    WRITE = "write"
    REMOVE = "remove"
    RENAME = "rename"
    CHMOD = "chmod"

    def __str__(self) -> str:
        return self.value


_FS_EVENT_TYPES = {t.value: t for t in FilesystemEventType}


@dataclass
class FilesystemEvent:
    """A change under a watched directory (``files.watch_dir``).

    ``path`` is absolute, ``name`` relative to the watched directory. A
    ``rename`` carries the old name; the new one follows as ``create``.
    """

    type: FilesystemEventType
    path: str
    name: str
    is_dir: bool = False
    timestamp: Optional[datetime] = None
    event_id: Optional[int] = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FilesystemEvent":
        kind = str(data.get("type") or "")
        eid = data.get("event_id")
        return cls(
            type=_FS_EVENT_TYPES.get(kind, kind),  # type: ignore[arg-type]
            path=data.get("path") or "",
            name=data.get("name") or "",
            is_dir=bool(data.get("is_dir", False)),
            timestamp=parse_time(data.get("timestamp")),
            event_id=int(eid) if eid is not None else None,
        )


@dataclass
class SnapshotInfo:
    """A snapshot of a sandbox's filesystem (``create_snapshot``,
    ``list_snapshots``). ``source`` is ``"manual"``, ``"pause"`` or
    ``"periodic"``; ``kind`` is ``"filesystem"`` (memory snapshots are not
    supported by this runtime)."""

    snapshot_id: str
    sandbox_id: Optional[str] = None
    template_id: Optional[str] = None
    source: Optional[str] = None
    kind: Optional[str] = None
    created_at: Optional[datetime] = None
    size_bytes: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    _KNOWN = ("snapshot_id", "sandbox_id", "template_id", "source", "kind", "created_at", "size_bytes")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SnapshotInfo":
        size = data.get("size_bytes")
        return cls(
            snapshot_id=str(data.get("snapshot_id") or data.get("id") or ""),
            sandbox_id=data.get("sandbox_id"),
            template_id=data.get("template_id"),
            source=data.get("source"),
            kind=data.get("kind"),
            created_at=parse_time(data.get("created_at")),
            size_bytes=int(size) if size is not None else None,
            extra=_extra(data, cls._KNOWN),
        )
