"""Minimal HTTP/1.1 client on http.client: keep-alive pool, retries, SSE.

Standard library only. Connections are kept per (scheme, host, port) in a
process-wide, thread-safe pool and reused across calls and sandboxes; a
connection that the server closed while idle is replaced transparently.
"""

from __future__ import annotations

import codecs
import http.client
import json as _json
import os
import random
import socket
import ssl
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union
from urllib.parse import quote, urlencode

from ._version import __version__
from .connection_config import ConnectionConfig
from .exceptions import SandboxException, TimeoutException, exception_for_status

# Retry policy (module level so tests can shorten the waits).
MAX_ATTEMPTS = 3
BACKOFF_BASE = 0.5  # seconds; attempt n waits BACKOFF_BASE * (n + 1) plus jitter
MAX_IN_PROGRESS_WAIT = 300.0  # seconds of 409 idempotency_in_progress polling before giving up
MAX_RETRY_AFTER = 60.0
POOL_MAXSIZE = 16
READ_CHUNK = 64 * 1024

USER_AGENT = f"declaw-python/{__version__}"

QueryValue = Union[str, int, float, bool, None, List[Any], Tuple[Any, ...]]
BodyFactory = Callable[[], Any]

DEFAULT: Any = object()  # "use the config's request timeout"

_STALE_ERRORS = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)


class CancelToken:
    """Lets another thread abort the HTTP calls made by one thread.

    The async SDK runs the blocking client in worker threads; when the
    awaiting task is cancelled it calls ``cancel()``, which shuts down every
    socket the worker is using (so a blocked read returns at once) and makes
    further attempts raise ``RequestCancelled``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socks: List[socket.socket] = []
        self.cancelled = False

    def attach(self, sock: Optional[socket.socket]) -> None:
        if sock is None:
            return
        with self._lock:
            if not self.cancelled:
                self._socks.append(sock)
                return
        _shutdown(sock)
        raise RequestCancelled("request cancelled")

    def detach(self, sock: Optional[socket.socket]) -> bool:
        """Forget ``sock``; True if the token was cancelled (the socket may be shut)."""
        with self._lock:
            try:
                self._socks.remove(sock)  # type: ignore[arg-type]
            except ValueError:
                pass
            return self.cancelled

    def check(self) -> None:
        if self.cancelled:
            raise RequestCancelled("request cancelled")

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            socks, self._socks = self._socks, []
        for s in socks:
            _shutdown(s)


class RequestCancelled(SandboxException):
    """The call was aborted by ``CancelToken.cancel`` (async task cancelled)."""


_local = threading.local()


def set_cancel_token(token: Optional[CancelToken]) -> None:
    """Bind ``token`` to the calling thread's requests (None unbinds)."""
    _local.token = token


def _current_token() -> Optional[CancelToken]:
    return getattr(_local, "token", None)


def _shutdown(sock: Optional[socket.socket]) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def path_segment(value: Any) -> str:
    """Quote one path segment (sandbox id, pid, ...) so it cannot escape it."""
    return quote(str(value), safe="")


def encode_query(query: Optional[Dict[str, QueryValue]]) -> str:
    """Encode a query dict; None values are dropped, lists repeat the key."""
    if not query:
        return ""
    items: List[Tuple[str, str]] = []
    for key, value in query.items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, bool):
                v = "true" if v else "false"
            items.append((key, str(v)))
    if not items:
        return ""
    return urlencode(items, quote_via=quote, safe="/")


class _Connection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _nodelay(self.sock)


class _TLSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _nodelay(self.sock)


def _nodelay(sock: Optional[socket.socket]) -> None:
    try:
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


class _Pool:
    """Idle keep-alive connections to one origin."""

    def __init__(self, scheme: str, host: str, port: int) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self._idle: List[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._ssl: Optional[ssl.SSLContext] = None

    def acquire(self, timeout: Optional[float]) -> Tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is not None:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            return conn, True
        if self.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            conn = _TLSConnection(self.host, self.port, timeout=timeout, context=self._ssl)
        else:
            conn = _Connection(self.host, self.port, timeout=timeout)
        conn.blocksize = READ_CHUNK
        return conn, False

    def release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < POOL_MAXSIZE and conn.sock is not None:
                self._idle.append(conn)
                return
        conn.close()

    def clear(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()


_pools: Dict[Tuple[str, str, int], _Pool] = {}
_pools_lock = threading.Lock()


def _pool_for(cfg: ConnectionConfig) -> _Pool:
    key = (cfg.scheme, cfg.host, cfg.port)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = _Pool(*key)
        return pool


def _forget_pools_after_fork() -> None:
    # A forked child must not share the parent's sockets: start with no pools.
    global _pools, _pools_lock
    _pools = {}
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_after_fork)


def close_all_connections() -> None:
    """Close every idle pooled connection (e.g. before fork)."""
    with _pools_lock:
        pools = list(_pools.values())
    for p in pools:
        p.clear()


class Response:
    """An HTTP answer. Non-streamed answers are fully read; streamed ones
    must be consumed with iter_bytes()/iter_sse() or closed."""

    def __init__(
        self,
        status: int,
        headers: http.client.HTTPMessage,
        body: Optional[bytes],
        raw: Optional[http.client.HTTPResponse] = None,
        on_done: Optional[Callable[[bool], None]] = None,
        sock: Optional[socket.socket] = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.content = body
        self._raw = raw
        self._on_done = on_done
        self._sock = sock

    def json(self) -> Any:
        if not self.content:
            return None
        try:
            return _json.loads(self.content.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise SandboxException(
                f"invalid JSON in response: {self.content[:200]!r}", status=self.status
            ) from e

    @property
    def text(self) -> str:
        return (self.content or b"").decode("utf-8")

    def iter_bytes(self, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        """Yield the body as it arrives (streamed responses)."""
        if self._raw is None:
            if self.content:
                yield self.content
            return
        ok = False
        try:
            while True:
                try:
                    chunk = self._raw.read1(chunk_size)
                except socket.timeout as e:
                    raise TimeoutException("timed out reading the response stream") from e
                except (http.client.HTTPException, OSError) as e:
                    raise SandboxException(f"response stream broken: {e}") from e
                if not chunk:
                    ok = True
                    break
                yield chunk
        finally:
            self._finish(ok)

    def iter_sse(self) -> Iterator["SSEEvent"]:
        """Yield server-sent events as they arrive."""
        parser = SSEParser()
        for chunk in self.iter_bytes():
            for ev in parser.feed(chunk):
                yield ev
        for ev in parser.flush():
            yield ev

    def close(self) -> None:
        """Stop reading a streamed answer and drop its connection."""
        self._finish(False)

    def abort(self) -> None:
        """Shut the connection of a streamed answer down from any thread:
        a read blocked in another thread returns at once (and fails)."""
        if self._raw is not None:
            _shutdown(self._sock)

    def _finish(self, fully_read: bool) -> None:
        raw, self._raw = self._raw, None
        done, self._on_done = self._on_done, None
        if raw is not None:
            # Always close the response: http.client leaves a Content-Length
            # body read to its end with read1() open, and a connection whose
            # last response is open fails its next request with
            # ResponseNotReady *after sending it*. Closing only releases the
            # response's file object; the socket stays with the connection.
            raw.close()
        if done is not None:
            done(fully_read)


class SSEEvent:
    """One server-sent event: ``event`` name (default "message"), ``data`` text, ``id``."""

    __slots__ = ("event", "data", "id")

    def __init__(self, event: str, data: str, id: Optional[str]) -> None:
        self.event, self.data, self.id = event, data, id

    def json(self) -> Any:
        if not self.data:
            return {}
        return _json.loads(self.data)

    def payload(self) -> Tuple[str, Dict[str, Any]]:
        """(kind, JSON object) of the event. The kind is the object's
        ``type``, else its ``stream``, else the SSE event name; data that is
        not a JSON object is returned as ``{"data": ...}``."""
        try:
            obj = self.json()
        except ValueError:
            obj = {"data": self.data}
        if not isinstance(obj, dict):
            obj = {"data": obj}
        return str(obj.get("type") or obj.get("stream") or self.event), obj

    def __repr__(self) -> str:
        return f"SSEEvent(event={self.event!r}, data={self.data!r}, id={self.id!r})"


class SSEParser:
    """Incremental text/event-stream parser (handles any chunk boundaries,
    including split UTF-8 sequences and CRLF split across chunks)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._event = ""
        self._data: List[str] = []
        self._id: Optional[str] = None
        self._last_id: Optional[str] = None
        self._skip_lf = False

    def feed(self, chunk: bytes) -> List[SSEEvent]:
        text = self._decoder.decode(chunk)
        return self._consume(text)

    def flush(self) -> List[SSEEvent]:
        text = self._decoder.decode(b"", final=True)
        events = self._consume(text)
        if self._buf:
            line, self._buf = self._buf, ""
            events.extend(self._line(line))
        # An unterminated final event is dropped, as the SSE spec says.
        return events

    def _consume(self, text: str) -> List[SSEEvent]:
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        buf = self._buf + text
        events: List[SSEEvent] = []
        start = 0
        n = len(buf)
        i = 0
        while i < n:
            ch = buf[i]
            if ch == "\n" or ch == "\r":
                line = buf[start:i]
                if ch == "\r":
                    if i + 1 < n:
                        if buf[i + 1] == "\n":
                            i += 1
                    else:
                        self._skip_lf = True
                start = i + 1
                events.extend(self._line(line))
            i += 1
        self._buf = buf[start:]
        return events

    def _line(self, line: str) -> List[SSEEvent]:
        if line == "":
            if not self._data and not self._event:
                return []
            ev = SSEEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id = "", [], None
            return [ev]
        if line.startswith(":"):
            return []
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            self._id = value
            self._last_id = value
        return []

    @property
    def last_event_id(self) -> Optional[str]:
        return self._last_id


def _retry_after_seconds(headers: http.client.HTTPMessage) -> Optional[float]:
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        dt = parsedate_to_datetime(value)
        return max(0.0, dt.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _decode_error_body(data: bytes) -> Any:
    if not data:
        return None
    try:
        return _json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return data.decode("utf-8", "replace")


def _backoff(attempt: int) -> None:
    delay = BACKOFF_BASE * (attempt + 1)
    time.sleep(delay + random.uniform(0, BACKOFF_BASE))


def killed_flag(resp: Response) -> bool:
    """The outcome of a kill answer: ``{"killed": b}``, ``{"queued": b}``,
    or True for any other 2xx body."""
    data = resp.json()
    if isinstance(data, dict):
        for key in ("killed", "queued"):
            if key in data:
                return bool(data[key])
    return True


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


class HTTPClient:
    """Issues requests for one ConnectionConfig."""

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self._pool = _pool_for(config)

    def url(self, path: str, query: Optional[Dict[str, QueryValue]] = None) -> str:
        q = encode_query(query)
        full = self.config.base_path + path
        return f"{full}?{q}" if q else full

    def absolute_url(self, path: str, query: Optional[Dict[str, QueryValue]] = None) -> str:
        q = encode_query(query)
        return f"{self.config.api_url}{path}?{q}" if q else self.config.api_url + path

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Dict[str, QueryValue]] = None,
        json: Any = None,
        body: Union[bytes, BodyFactory, None] = None,
        headers: Optional[Dict[str, str]] = None,
        timeout: Any = DEFAULT,
        stream: bool = False,
        accept: str = "application/json",
        retry: Optional[bool] = None,
        idempotency_key: Optional[str] = None,
        error_class: type = SandboxException,
    ) -> Response:
        """Send a request; raise the mapped SandboxException on 4xx/5xx.

        ``body`` is bytes or a zero-argument callable returning a fresh body
        (bytes, iterable of bytes or file) for each attempt. ``retry``
        enables retries on 5xx / read errors (default: idempotent methods, or
        any request with an idempotency key); connect failures are always
        retried since nothing was sent. ``timeout`` is seconds, None for no
        timeout, or DEFAULT for the config's request timeout.
        """
        if timeout is DEFAULT:
            timeout = self.config.request_timeout
        if retry is None:
            retry = method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS") or idempotency_key is not None
        hdrs: Dict[str, str] = {"User-Agent": USER_AGENT, "Accept": accept}
        hdrs.update(self.config.auth_headers())
        hdrs.update(self.config.headers)
        payload: Any = None
        if json is not None:
            payload = _json.dumps(json, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        elif body is not None:
            payload = body
        elif method in ("POST", "PUT", "PATCH"):
            payload = b""
        if idempotency_key:
            hdrs["Idempotency-Key"] = idempotency_key
        if headers:
            hdrs.update(headers)
        url = self.url(path, query)

        attempt = 0
        in_progress = 0
        in_progress_deadline: Optional[float] = None
        token = _current_token()
        while True:
            if token is not None:
                token.check()
            body_value = payload() if callable(payload) else payload
            try:
                resp = self._send_once(method, url, body_value, hdrs, timeout, stream)
            except RequestCancelled:
                raise
            except _ConnectError as e:
                attempt += 1
                if attempt < MAX_ATTEMPTS:
                    _backoff(attempt - 1)
                    continue
                raise SandboxException(f"cannot connect to {self.config.api_url}: {e.__cause__}") from e.__cause__
            except socket.timeout as e:
                attempt += 1
                if retry and attempt < MAX_ATTEMPTS:
                    _backoff(attempt - 1)
                    continue
                raise TimeoutException(f"{method} {path} timed out after {timeout} s") from e
            except (http.client.HTTPException, OSError) as e:
                if token is not None and token.cancelled:
                    raise RequestCancelled("request cancelled") from e
                attempt += 1
                if retry and attempt < MAX_ATTEMPTS:
                    _backoff(attempt - 1)
                    continue
                raise SandboxException(f"{method} {path} failed: {e!r}") from e

            if resp.status < 400:
                return resp
            # Error answers are always read fully by _wrap.
            err_body = _decode_error_body(resp.content or b"")
            code = err_body.get("code") if isinstance(err_body, dict) else None
            if resp.status == 409 and code == "idempotency_in_progress":
                # The same logical request is still being served (e.g. a create
                # whose first attempt timed out on our side): poll until done.
                now = time.monotonic()
                if in_progress_deadline is None:
                    in_progress_deadline = now + MAX_IN_PROGRESS_WAIT
                if now < in_progress_deadline:
                    in_progress += 1
                    wait = _retry_after_seconds(resp.headers)
                    wait = wait if wait is not None else min(5.0, BACKOFF_BASE * in_progress)
                    time.sleep(max(0.0, min(MAX_RETRY_AFTER, wait, in_progress_deadline - now)))
                    continue
            if resp.status >= 500 and retry and attempt + 1 < MAX_ATTEMPTS:
                attempt += 1
                _backoff(attempt - 1)
                continue
            raise exception_for_status(
                resp.status,
                err_body,
                retry_after=_retry_after_seconds(resp.headers),
                default=error_class,
            )

    def _send_once(
        self,
        method: str,
        url: str,
        body: Any,
        headers: Dict[str, str],
        timeout: Optional[float],
        stream: bool,
    ) -> Response:
        token = _current_token()
        for _ in range(2):
            conn, reused = self._pool.acquire(timeout)
            if conn.sock is None:
                try:
                    conn.connect()
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    raise _ConnectError() from e
            sock = conn.sock
            if token is not None:
                try:
                    token.attach(sock)
                except RequestCancelled:
                    conn.close()
                    raise
            try:
                conn.request(method, url, body=body, headers=headers)
                raw = conn.getresponse()
            except _STALE_ERRORS:
                conn.close()
                if token is not None:
                    token.detach(sock)
                if reused and not _is_consumed(body):
                    continue  # the server closed an idle keep-alive connection
                raise
            except BaseException:
                conn.close()
                if token is not None:
                    token.detach(sock)
                raise
            return self._wrap(conn, raw, stream, sock, token)
        raise SandboxException("connection closed by server")  # pragma: no cover

    def _wrap(
        self,
        conn: http.client.HTTPConnection,
        raw: http.client.HTTPResponse,
        stream: bool,
        sock: Optional[socket.socket] = None,
        token: Optional[CancelToken] = None,
    ) -> Response:
        pool = self._pool

        def done(fully_read: bool) -> None:
            cancelled = token.detach(sock) if token is not None else False
            if fully_read and not raw.will_close and not cancelled:
                pool.release(conn)
            else:
                conn.close()

        if stream and raw.status < 400:
            return Response(raw.status, raw.headers, None, raw=raw, on_done=done, sock=sock)
        try:
            data = raw.read()
        except socket.timeout:
            conn.close()
            if token is not None:
                token.detach(sock)
            raise
        except (http.client.HTTPException, OSError):
            conn.close()
            if token is not None:
                token.detach(sock)
            raise
        done(True)
        return Response(raw.status, raw.headers, data)


class _ConnectError(Exception):
    pass


def _is_consumed(body: Any) -> bool:
    """True for one-shot bodies (iterators/files) that cannot be sent again."""
    return body is not None and not isinstance(body, (bytes, bytearray, memoryview, str))
