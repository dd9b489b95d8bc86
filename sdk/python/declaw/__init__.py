"""Declaw Python SDK: secure sandboxes for AI agents.

    from declaw import Sandbox

    with Sandbox.create() as sbx:
        print(sbx.commands.run("echo hello").stdout)
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
    ProcessInfo,
    SandboxInfo,
    SandboxListResult,
    SandboxMetrics,
    WriteInfo,
)
from .pty import Pty, PtyHandle, PtySize
from .sandbox import Sandbox, SandboxQuery
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

__all__ = [
    "__version__",
    # sandbox
    "Sandbox",
    "SandboxQuery",
    "SandboxInfo",
    "SandboxListResult",
    "SandboxMetrics",
    "ConnectionConfig",
    # commands / files / terminals
    "Commands",
    "CommandHandle",
    "CommandResult",
    "ProcessInfo",
    "Filesystem",
    "WriteEntry",
    "EntryInfo",
    "WriteInfo",
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
