"""An in-process fake Declaw API that records requests and plays canned answers."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Union
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: Dict[str, str] = field(default_factory=dict)
    sse: Optional[List[bytes]] = None  # raw chunks of a text/event-stream body
    chunk_delay: float = 0.0
    delay: float = 0.0  # before answering
    close_after: bool = False  # drop the connection after answering (no Connection: close header)
    truncate: bool = False  # SSE: end without the final chunk, then drop the connection
    hold: Optional[threading.Event] = None  # SSE: after the chunks, keep the stream open (keepalive comments) until set


@dataclass
class Recorded:
    method: str
    path: str  # raw (still percent-encoded) path
    query: Dict[str, List[str]]
    raw_query: str
    headers: Dict[str, str]  # lower-cased names
    body: bytes
    client: Any

    @property
    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None


Responder = Union[Reply, List[Reply], Callable[[Recorded], Reply]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return  # the client gave up (timeouts under test)
        super().handle_error(request, client_address)


class FakeDeclaw:
    def __init__(self) -> None:
        self.requests: List[Recorded] = []
        self.disconnects: List[str] = []  # paths of SSE streams the client dropped
        self.routes: List[tuple] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = -1  # buffer headers + body into one segment (no Nagle/delayed-ACK stalls)

            def log_message(self, *a: Any) -> None:  # quiet
                pass

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                rec = Recorded(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query, keep_blank_values=True),
                    raw_query=parts.query,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self._read_body(),
                    client=self.client_address,
                )
                with fake.lock:
                    fake.requests.append(rec)
                reply = fake._reply_for(rec)
                if reply.delay:
                    time.sleep(reply.delay)
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if reply.sse is not None:
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    try:
                        self._send_sse(reply)
                    except (BrokenPipeError, ConnectionResetError):
                        with fake.lock:
                            fake.disconnects.append(rec.path)
                        self.close_connection = True
                        return
                    if reply.truncate:
                        self.close_connection = True
                        return
                else:
                    body = reply.body
                    if reply.json is not None:
                        body = json.dumps(reply.json).encode()
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    self.wfile.flush()
                if reply.close_after:
                    self.close_connection = True

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _send_sse(self, reply: Reply) -> None:
                for chunk in reply.sse or []:
                    self._chunk(chunk)
                    if reply.chunk_delay:
                        time.sleep(reply.chunk_delay)
                if reply.hold is not None:
                    deadline = time.monotonic() + 20
                    while not reply.hold.wait(0.02) and time.monotonic() < deadline:
                        self._chunk(b": keepalive\n\n")
                if reply.truncate:
                    return
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def domain(self) -> str:
        return f"127.0.0.1:{self.port}"

    def route(self, method: str, path: str, responder: Responder) -> None:
        """Answer METHOD requests whose path fully matches the regex ``path``.
        A list of replies is played in order, its last one repeating."""
        if isinstance(responder, list):
            responder = list(responder)
        with self.lock:
            self.routes.insert(0, (method, re.compile(path), responder))

    def _reply_for(self, rec: Recorded) -> Reply:
        with self.lock:
            for method, rx, responder in self.routes:
                if method == rec.method and rx.fullmatch(rec.path):
                    if callable(responder):
                        return responder(rec)
                    if isinstance(responder, list):
                        return responder.pop(0) if len(responder) > 1 else responder[0]
                    return responder
        return Reply(404, json={"message": f"no route for {rec.method} {rec.path}", "code": "not_found"})

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.routes.clear()
            self.disconnects.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sse_event(event: Optional[str], data: Any, id: Optional[str] = None) -> bytes:
    out = b""
    if event:
        out += b"event: " + event.encode() + b"\n"
    if id is not None:
        out += b"id: " + id.encode() + b"\n"
    text = data if isinstance(data, str) else json.dumps(data)
    for line in text.split("\n"):
        out += b"data: " + line.encode() + b"\n"
    return out + b"\n"
