"""Exceptions raised by the Declaw SDK.

Every error answered by the API carries a JSON body ``{"message", "code"}``;
the SDK keeps ``message``, ``code`` and the HTTP ``status`` on the exception.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

__all__ = [
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
    "exception_for_status",
]


class SandboxException(Exception):
    """Base class of every error the SDK raises.

    Attributes:
        message: human readable message (the ``message`` of the error body).
        status: HTTP status code, or None for client-side errors.
        code: machine readable ``code`` of the error body, if any.
        body: the decoded error body (dict) or raw text, if any.
    """

    def __init__(
        self,
        message: str = "",
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.body = body

    def __str__(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(str(self.status))
        if self.code:
            parts.append(self.code)
        prefix = " ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class InvalidArgumentException(SandboxException, ValueError):
    """The request was rejected as invalid (HTTP 400 / 422), or the SDK
    refused an argument before sending it (then ``status`` is None)."""


class AuthenticationException(SandboxException):
    """Missing or invalid API key, or not allowed (HTTP 401 / 403)."""


class InsufficientBalanceException(SandboxException):
    """The account has no credit left (HTTP 402)."""

    def __init__(self, message: str = "", *, wallet_type: Optional[str] = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.wallet_type = wallet_type


class NotFoundException(SandboxException):
    """The sandbox, process or file does not exist (HTTP 404)."""


class TimeoutException(SandboxException, TimeoutError):
    """The request or the command timed out (HTTP 408 or a client-side timeout)."""


class ConflictException(SandboxException):
    """The resource is in a conflicting state (HTTP 409)."""


#: Alias kept for parity with the other SDKs.
VersionMismatchException = ConflictException


class NotEnoughSpaceException(SandboxException):
    """The payload is too large or the sandbox is out of space (HTTP 413 / 507)."""


class RateLimitException(SandboxException):
    """Too many requests or sandboxes (HTTP 429), or no host capacity for
    another sandbox right now (HTTP 503, code ``insufficient_capacity``).

    ``retry_after`` is the number of seconds from the ``Retry-After`` header, if any.
    """

    def __init__(self, message: str = "", *, retry_after: Optional[float] = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class CommandExitException(SandboxException):
    """A command finished with a non-zero exit code (raised by ``CommandHandle.wait``)."""

    def __init__(
        self,
        exit_code: int,
        stdout: str = "",
        stderr: str = "",
        error: Optional[str] = None,
        pid: Optional[int] = None,
    ) -> None:
        msg = f"command exited with code {exit_code}"
        if error:
            msg += f": {error}"
        elif stderr:
            tail = stderr.strip().splitlines()[-1:] or [""]
            msg += f": {tail[0][:200]}"
        super().__init__(msg)
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        self.error = error
        self.pid = pid


class TemplateException(SandboxException):
    """A template is missing, not ready or invalid."""


class BuildException(SandboxException):
    """A template build failed."""


class FileUploadException(SandboxException):
    """A file upload failed."""


class GitAuthException(SandboxException):
    """Git authentication failed inside the sandbox."""


class GitUpstreamException(SandboxException):
    """A git upstream operation failed inside the sandbox."""


_STATUS_MAP = {
    400: InvalidArgumentException,
    422: InvalidArgumentException,
    401: AuthenticationException,
    403: AuthenticationException,
    402: InsufficientBalanceException,
    404: NotFoundException,
    408: TimeoutException,
    409: ConflictException,
    413: NotEnoughSpaceException,
    507: NotEnoughSpaceException,
    429: RateLimitException,
}


def exception_for_status(
    status: int,
    body: Any = None,
    *,
    retry_after: Optional[float] = None,
    default: type = SandboxException,
) -> SandboxException:
    """Build the exception matching an HTTP error answer.

    ``body`` is the decoded JSON body (a dict with ``message`` / ``code``) or
    the raw text of the answer. ``default`` is the class used for statuses
    without a specific mapping.
    """
    message = ""
    code: Optional[str] = None
    if isinstance(body, dict):
        message = str(body.get("message") or body.get("error") or "")
        raw_code = body.get("code")
        code = str(raw_code) if raw_code is not None else None
    elif isinstance(body, (str, bytes)):
        message = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        message = message.strip()[:1000]
    if not message:
        message = _default_message(status)
    if code == "template_not_ready":
        return TemplateException(message, status=status, code=code, body=body)
    if code == "insufficient_capacity":
        # The host has no room for the sandbox now (HTTP 503): like a rate
        # limit, it passes; retry_after says when to try again.
        return RateLimitException(message, retry_after=retry_after, status=status, code=code, body=body)
    cls = _STATUS_MAP.get(status, default)
    kw: Dict[str, Any] = {"status": status, "code": code, "body": body}
    if cls is RateLimitException:
        return RateLimitException(message, retry_after=retry_after, **kw)
    if cls is InsufficientBalanceException:
        wallet = body.get("wallet_type") if isinstance(body, dict) else None
        return InsufficientBalanceException(message, wallet_type=wallet, **kw)
    return cls(message, **kw)


def _default_message(status: int) -> str:
    if status == 464:
        return "the server requires HTTP/2 (HTTP 464)"
    if status == 410:
        return "the sandbox was killed"
    try:
        from http import HTTPStatus

        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
