"""Declaw Python SDK: secure sandboxes for AI agents.

    from declaw import Sandbox

    with Sandbox.create() as sbx:
        print(sbx.commands.run("echo hello").stdout)

asyncio: ``AsyncSandbox`` has the same API with coroutines
(``async with await AsyncSandbox.create() as sbx: ...``).
"""

from ._version import __version__
from .commands import CommandHandle, Commands
from .connection_config import ConnectionConfig
from .exceptions import (
    AuthenticationException,
    BuildException,
    CommandExitException,
    ConflictException,
    FileUploadException,
    GitAuthException,
    GitUpstreamException,
    InsufficientBalanceException,
    InvalidArgumentException,
    NotEnoughSpaceException,
    NotFoundException,
    RateLimitException,
    SandboxException,
    TemplateException,
    TimeoutException,
    VersionMismatchException,
)
from .filesystem import Filesystem, WriteEntry
from .models import (
    AuditEntry,
    CommandResult,
    EntryInfo,
    FilesystemEvent,
    FilesystemEventType,
    ProcessInfo,
    SandboxInfo,
    SandboxListResult,
    SandboxMetrics,
    SandboxResources,
    SnapshotInfo,
    WriteInfo,
)
from .pty import Pty, PtyHandle, PtySize
from .sandbox import Sandbox, SandboxQuery
from .sandbox_async import (
    AsyncAuditLog,
    AsyncCommandHandle,
    AsyncCommands,
    AsyncFilesystem,
    AsyncPty,
    AsyncPtyHandle,
    AsyncSandbox,
    AsyncSandboxListResult,
    AsyncStdio,
    AsyncStdioHandle,
    AsyncWatchHandle,
)
from .security import (
    ALL_TRAFFIC,
    PII_TYPES,
    AuditConfig,
    EnvSecurityConfig,
    InjectionDefenseConfig,
    NetworkPolicy,
    PIIConfig,
    SecureEnvVar,
    SecurityPolicy,
    TransformationRule,
)
from .stdio import Stdio, StdioHandle
from .template import AsyncTemplate, BuildInfo, CopyItem, Template, TemplateBase, TemplateBuildStatus, TemplateInfo
from .volumes import AsyncVolumes, Volume, VolumeAttachment, Volumes
from .watch import WatchHandle

__all__ = [
    "Volumes",
    "AsyncVolumes",
    "Volume",
    "VolumeAttachment",
    "__version__",
    # sandbox
    "Sandbox",
    "SandboxQuery",
    "SandboxInfo",
    "SandboxListResult",
    "SandboxMetrics",
    "SandboxResources",
    "SnapshotInfo",
    "ConnectionConfig",
    # asyncio
    "AsyncSandbox",
    "AsyncSandboxListResult",
    "AsyncCommands",
    "AsyncCommandHandle",
    "AsyncFilesystem",
    "AsyncWatchHandle",
    "AsyncPty",
    "AsyncPtyHandle",
    "AsyncStdio",
    "AsyncStdioHandle",
    "AsyncAuditLog",
    # commands / files / terminals
    "Commands",
    "CommandHandle",
    "CommandResult",
    "ProcessInfo",
    "Filesystem",
    "WriteEntry",
    "EntryInfo",
    "WriteInfo",
    "WatchHandle",
    "FilesystemEvent",
    "FilesystemEventType",
    "Pty",
    "PtyHandle",
    "PtySize",
    "Stdio",
    "StdioHandle",
    "AuditEntry",
    # security
    "ALL_TRAFFIC",
    "PII_TYPES",
    "SecurityPolicy",
    "PIIConfig",
    "InjectionDefenseConfig",
    "TransformationRule",
    "NetworkPolicy",
    "AuditConfig",
    "EnvSecurityConfig",
    "SecureEnvVar",
    # templates
    "Template",
    "AsyncTemplate",
    "TemplateBase",
    "TemplateBuildStatus",
    "TemplateInfo",
    "BuildInfo",
    "CopyItem",
    # exceptions
    "SandboxException",
    "InvalidArgumentException",
    "AuthenticationException",
    "InsufficientBalanceException",
    "NotFoundException",
    "TimeoutException",
    "ConflictException",
    "VersionMismatchException",
    "NotEnoughSpaceException",
    "RateLimitException",
    "CommandExitException",
    "TemplateException",
    "BuildException",
    "FileUploadException",
    "GitAuthException",
    "GitUpstreamException",
]
