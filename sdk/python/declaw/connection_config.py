"""Where the API is and how to authenticate to it."""

from __future__ import annotations

import os
from typing import Dict, Optional
from urllib.parse import urlsplit

from .exceptions import InvalidArgumentException

__all__ = ["ConnectionConfig", "DEFAULT_DOMAIN", "DEFAULT_REQUEST_TIMEOUT"]

DEFAULT_DOMAIN = "api.declaw.ai"
DEFAULT_REQUEST_TIMEOUT = 30.0

_UNSET = object()


class ConnectionConfig:
    """Connection settings shared by every call of a sandbox.

    Args:
        api_key: API key; defaults to ``$DECLAW_API_KEY``. Sent as both
            ``Authorization: Bearer <key>`` and ``X-API-Key: <key>``.
        domain: ``host`` or ``host:port`` of the API; defaults to
            ``$DECLAW_DOMAIN`` then ``api.declaw.ai``. The scheme is https when
            no port is given or the port is 443, http otherwise. A full URL
            (``http://host:port``) is accepted too.
        api_url: full base URL, overriding ``domain``; defaults to
            ``$DECLAW_API_URL``.
        request_timeout: seconds for one HTTP request (default 30; 0 or None
            after construction means no timeout).
        headers: extra headers sent with every request.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        api_url: Optional[str] = None,
        request_timeout: Optional[float] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> None:
        self.api_key = api_key if api_key is not None else os.environ.get("DECLAW_API_KEY") or None
        explicit_domain = domain is not None
        self.domain = (domain or os.environ.get("DECLAW_DOMAIN") or DEFAULT_DOMAIN).strip()
        if api_url is None and not explicit_domain:
            api_url = os.environ.get("DECLAW_API_URL") or None
        self.api_url = (api_url or self._url_from_domain(self.domain)).rstrip("/")
        if request_timeout is None:
            request_timeout = DEFAULT_REQUEST_TIMEOUT
        if request_timeout < 0:
            raise InvalidArgumentException("request_timeout must be >= 0")
        self.request_timeout: Optional[float] = float(request_timeout) or None
        self.headers: Dict[str, str] = dict(headers or {})

        parts = urlsplit(self.api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgumentException(f"invalid API URL {self.api_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")

    @staticmethod
    def _url_from_domain(domain: str) -> str:
        if "://" in domain:
            return domain
        port = ""
        if domain.startswith("["):  # [v6addr]:port
            _, _, rest = domain.partition("]")
            if rest.startswith(":"):
                port = rest[1:]
        elif domain.count(":") == 1:
            port = domain.rpartition(":")[2]
        elif domain.count(":") > 1:  # bare IPv6 address
            domain = f"[{domain}]"
        if port:
            if not port.isdigit():
                raise InvalidArgumentException(f"invalid port in domain {domain!r}")
            scheme = "https" if int(port) == 443 else "http"
            return f"{scheme}://{domain}"
        return f"https://{domain}"

    def with_overrides(
        self,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> "ConnectionConfig":
        """A copy with some settings replaced (None keeps the current value)."""
        cfg = ConnectionConfig.__new__(ConnectionConfig)
        cfg.__dict__.update(self.__dict__)
        cfg.headers = dict(self.headers)
        if api_key is not None:
            cfg.api_key = api_key
        if domain is not None:
            other = ConnectionConfig(api_key=cfg.api_key, domain=domain)
            for k in ("domain", "api_url", "scheme", "host", "port", "base_path"):
                setattr(cfg, k, getattr(other, k))
        if request_timeout is not None:
            cfg.request_timeout = float(request_timeout) or None
        return cfg

    def auth_headers(self) -> Dict[str, str]:
        if not self.api_key:
            return {}
        return {"Authorization": f"Bearer {self.api_key}", "X-API-Key": self.api_key}

    def __repr__(self) -> str:
        return f"ConnectionConfig(api_url={self.api_url!r}, request_timeout={self.request_timeout!r})"
