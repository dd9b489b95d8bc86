"""``AsyncSandbox``: the asyncio flavour of ``Sandbox``.

Same API and wire format as the sync SDK (every request is made by the
same client, in a worker thread, so retries, error mapping and exceptions
are identical); every method that talks to the server is a coroutine.
Streams (command output, PTY, stdio, directory watches, file downloads) are
read by a thread and delivered to the event loop, so they never block it.
Callbacks (``on_stdout``, ``on_stderr``, ``on_data``, ``on_event``) may be
plain functions or coroutine functions; they run on the event loop.
Cancelling the task that awaits a call or a stream closes its connection.

    import asyncio
    from declaw import AsyncSandbox

    async def main():
        async with await AsyncSandbox.create() as sbx:
            r = await sbx.commands.run("echo hi")
            print(r.stdout)

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, AsyncIterator, Callable, Deque, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import _aio
from .commands import DEFAULT_COMMAND_TIMEOUT, CommandHandle, Commands, _check_timeout
from .connection_config import ConnectionConfig
from .exceptions import CommandExitException, NotFoundException, SandboxException
from .filesystem import Filesystem, WriteEntry
from .models import (
    AuditEntry,
    CommandResult,
    EntryInfo,
    FilesystemEvent,
    ProcessInfo,
    SandboxInfo,
    SandboxListResult,
    SandboxMetrics,
    SnapshotInfo,
    WriteInfo,
)
from .pty import DEFAULT_PTY_TIMEOUT, Pty, PtyHandle, PtySize
from .sandbox import DEFAULT_SANDBOX_TIMEOUT, DEFAULT_TEMPLATE, Sandbox, SandboxQuery, _dual
from .security import NetworkPolicy, SecureEnvVar, SecurityPolicy
from .stdio import Stdio, StdioHandle
from .watch import MAX_BUFFERED_EVENTS, _WatchState, iter_watch_events, watcher_path

__all__ = [
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
]

log = logging.getLogger("declaw")

#: A callback that may be sync or async.
Callback = Callable[..., Any]


# ---------------------------------------------------------------- commands
class AsyncCommandHandle:
    """A background command (``await handle.wait()``)."""

    def __init__(
        self,
        commands: "AsyncCommands",
        handle: CommandHandle,
        on_stdout: Optional[Callback] = None,
        on_stderr: Optional[Callback] = None,
    ) -> None:
        self._commands = commands
        self._handle = handle
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr

    @property
    def pid(self) -> int:
        return self._handle.pid

    @property
    def stdout(self) -> str:
        return self._handle.stdout

    @property
    def stderr(self) -> str:
        return self._handle.stderr

    @property
    def exit_code(self) -> Optional[int]:
        return self._handle.exit_code

    @property
    def error(self) -> Optional[str]:
        return self._handle.error

    async def wait(
        self,
        on_stdout: Optional[Callback] = None,
        on_stderr: Optional[Callback] = None,
        request_timeout: Optional[float] = None,
    ) -> CommandResult:
        """Wait until the command exits (``GET .../commands/{pid}/wait``);
        the callbacks get the whole output. Raises ``CommandExitException``
        if the exit code is not zero."""
        failure: Optional[CommandExitException] = None
        result: Optional[CommandResult] = None
        try:
            result = await _aio.call_long(self._handle.wait, request_timeout=request_timeout)
        except CommandExitException as e:
            failure = e
        out_cb = on_stdout or self._on_stdout
        err_cb = on_stderr or self._on_stderr
        if out_cb and self._handle.stdout:
            await _aio.maybe_await(out_cb, self._handle.stdout)
        if err_cb and self._handle.stderr:
            await _aio.maybe_await(err_cb, self._handle.stderr)
        if failure is not None:
            raise failure
        assert result is not None
        return result

    async def kill(self) -> bool:
        """Kill the command and its process tree; False if it was already gone."""
        return await self._commands.kill(self.pid)

    async def send_stdin(self, data: Union[str, bytes]) -> None:
        await self._commands.send_stdin(self.pid, data)

    async def disconnect(self) -> None:
        """Stop tracking the command locally; it keeps running."""

    def __repr__(self) -> str:
        return f"AsyncCommandHandle(pid={self.pid})"


class AsyncCommands:
    """``sbx.commands`` of an ``AsyncSandbox`` (same methods as ``Commands``)."""

    def __init__(self, commands: Commands) -> None:
        self._sync = commands

    async def run(
        self,
        cmd: str,
        background: bool = False,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        on_stdout: Optional[Callback] = None,
        on_stderr: Optional[Callback] = None,
        stdin: Optional[bool] = None,
        timeout: Optional[float] = DEFAULT_COMMAND_TIMEOUT,
        request_timeout: Optional[float] = None,
        tag: Optional[str] = None,
    ) -> Any:
        """Run ``cmd``; see ``Commands.run``. Foreground: a ``CommandResult``
        (streamed over SSE when a callback is given); background: an
        ``AsyncCommandHandle``."""
        timeout = _check_timeout(timeout)
        if background:
            handle = await _aio.call(
                self._sync.run, cmd, background=True, envs=envs, user=user, cwd=cwd, stdin=stdin,
                timeout=timeout, request_timeout=request_timeout, tag=tag,
            )
            return AsyncCommandHandle(self, handle, on_stdout, on_stderr)
        if on_stdout is not None or on_stderr is not None:
            return await self._stream(cmd, on_stdout, on_stderr, envs, user, cwd, timeout, request_timeout, tag)
        return await _aio.call_long(
            self._sync.run, cmd, envs=envs, user=user, cwd=cwd, stdin=stdin, timeout=timeout,
            request_timeout=request_timeout, tag=tag,
        )

    async def run_stream(
        self,
        cmd: str,
        on_stdout: Optional[Callback] = None,
        on_stderr: Optional[Callback] = None,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_COMMAND_TIMEOUT,
        request_timeout: Optional[float] = None,
    ) -> CommandResult:
        """Run ``cmd`` over SSE (``POST .../commands/stream``), awaiting the
        callbacks with each chunk as it arrives."""
        return await self._stream(cmd, on_stdout, on_stderr, envs, user, cwd, _check_timeout(timeout),
                                  request_timeout, None)

    async def _stream(
        self,
        cmd: str,
        on_stdout: Optional[Callback],
        on_stderr: Optional[Callback],
        envs: Optional[Dict[str, str]],
        user: Optional[str],
        cwd: Optional[str],
        timeout: Optional[float],
        request_timeout: Optional[float],
        tag: Optional[str],
    ) -> CommandResult:
        Commands._body(cmd, False, envs, user, cwd, timeout, False, tag)  # validate before starting a thread

        def producer(emit: Callable[[Any], None]) -> CommandResult:
            return self._sync._stream(
                cmd,
                lambda chunk: emit(("stdout", chunk)),
                lambda chunk: emit(("stderr", chunk)),
                envs, user, cwd, timeout, request_timeout, tag,
            )

        feed = _aio.Feed(producer)
        try:
            async for kind, chunk in feed:
                cb = on_stdout if kind == "stdout" else on_stderr
                if cb is not None:
                    await _aio.maybe_await(cb, chunk)
        finally:
            feed.abort()  # a no-op once the stream ended; closes it if a callback failed
        return feed.result

    async def list(self) -> List[ProcessInfo]:
        return await _aio.call(self._sync.list)

    async def kill(self, pid: int) -> bool:
        return await _aio.call(self._sync.kill, pid)

    async def send_stdin(self, pid: int, data: Union[str, bytes]) -> None:
        await _aio.call(self._sync.send_stdin, pid, data)

    async def connect(
        self,
        pid: int,
        on_stdout: Optional[Callback] = None,
        on_stderr: Optional[Callback] = None,
    ) -> AsyncCommandHandle:
        """A handle on a running process (``NotFoundException`` if it is not running)."""
        handle = await _aio.call(self._sync.connect, pid)
        return AsyncCommandHandle(self, handle, on_stdout, on_stderr)


# ------------------------------------------------------------------- files
class AsyncWatchHandle:
    """A running directory watch (``await sbx.files.watch_dir(...)``).

    Events are read in the background. With ``on_event`` (sync or async)
    each ``FilesystemEvent`` is passed to it on the event loop; otherwise
    they are buffered for ``async for ev in handle`` and
    ``await handle.get_new_events()``. ``await handle.stop()`` (or leaving
    ``async with``) deletes the watcher.
    """

    def __init__(self, files: Filesystem, watcher_id: str, path: str, on_event: Optional[Callback] = None) -> None:
        self._files = files
        self._state = _WatchState(watcher_id, path)
        self._on_event = on_event
        self._events: Deque[FilesystemEvent] = collections.deque()
        self._changed = asyncio.Event()
        self._done = False
        self._error: Optional[BaseException] = None
        self._feed = _aio.Feed(
            lambda emit: _aio.drain(iter_watch_events(files, self._state), emit), on_abort=self._state.abort
        )
        self._task = asyncio.get_running_loop().create_task(self._pump())

    @property
    def watcher_id(self) -> str:
        return self._state.watcher_id

    @property
    def path(self) -> str:
        return self._state.path

    @property
    def gaps(self) -> int:
        return self._state.gaps

    @property
    def errors(self) -> List[str]:
        return list(self._state.errors)

    @property
    def is_running(self) -> bool:
        return not self._done

    async def _pump(self) -> None:
        try:
            async for event in self._feed:
                if self._on_event is not None:
                    try:
                        await _aio.maybe_await(self._on_event, event)
                    except Exception:  # a failing callback must not end the watch
                        log.exception("declaw: watch_dir on_event callback failed")
                    continue
                if len(self._events) >= MAX_BUFFERED_EVENTS:
                    self._events.popleft()
                    self._state.gaps += 1
                self._events.append(event)
                self._changed.set()
        except asyncio.CancelledError:
            self._feed.abort()
        except Exception as e:  # reported to the reader
            self._error = e
        finally:
            self._done = True
            self._changed.set()

    async def get_new_events(self) -> List[FilesystemEvent]:
        """The events received since the last call (does not wait). Raises
        the error that ended the watch, once no buffered event is left."""
        events = list(self._events)
        self._events.clear()
        if not events and self._error is not None:
            err, self._error = self._error, None
            raise err
        return events

    def __aiter__(self) -> AsyncIterator[FilesystemEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[FilesystemEvent]:
        while True:
            while self._events:
                yield self._events.popleft()
            if self._done:
                if self._error is not None:
                    err, self._error = self._error, None
                    raise err
                return
            self._changed.clear()
            await self._changed.wait()

    async def stop(self) -> None:
        """Delete the watcher (``DELETE .../files/watch/{id}``; idempotent)
        and end the stream."""
        already = self._state.stopped
        self._feed.abort()
        if not already:
            try:
                await _aio.call(self._files._request, "DELETE", watcher_path(self._state.watcher_id))
            except NotFoundException:
                pass
        if not self._task.done() and self._task is not asyncio.current_task():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    close = stop

    async def __aenter__(self) -> "AsyncWatchHandle":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"AsyncWatchHandle(watcher_id={self.watcher_id!r}, path={self.path!r})"


class AsyncFilesystem:
    """``sbx.files`` of an ``AsyncSandbox`` (same methods as ``Filesystem``)."""

    def __init__(self, files: Filesystem) -> None:
        self._sync = files

    async def read(
        self,
        path: str,
        format: str = "text",
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Any:
        """``str`` (``format="text"``), ``bytes`` (``"bytes"``) or, with
        ``"stream"``, an async iterator of ``bytes`` chunks (``async for``;
        call ``await it.aclose()`` to stop early)."""
        if format != "stream":
            return await _aio.call_long(self._sync.read, path, format=format, user=user,
                                        request_timeout=request_timeout)
        opened = object()

        def producer(emit: Callable[[Any], None]) -> None:
            chunks = self._sync.read(path, format="stream", user=user, request_timeout=request_timeout)
            emit(opened)
            _aio.drain(chunks, emit)

        feed = _aio.Feed(producer)
        async for first in feed:  # raises the HTTP error of the request, if any
            if first is opened:
                break
        return feed

    async def write(
        self,
        path: str,
        data: Any,
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> WriteInfo:
        """Write a file (``str`` as text, ``bytes`` or a file object byte-exact)."""
        return await _aio.call_long(self._sync.write, path, data, user=user, request_timeout=request_timeout)

    async def write_files(
        self,
        files: Sequence[Union[WriteEntry, Mapping[str, Any]]],
        user: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> List[WriteInfo]:
        return await _aio.call_long(self._sync.write_files, files, user=user, request_timeout=request_timeout)

    async def list(self, path: str, depth: int = 1, user: Optional[str] = None) -> List[EntryInfo]:
        return await _aio.call(self._sync.list, path, depth=depth, user=user)

    async def exists(self, path: str, user: Optional[str] = None) -> bool:
        return await _aio.call(self._sync.exists, path, user=user)

    async def get_info(self, path: str, user: Optional[str] = None) -> EntryInfo:
        return await _aio.call(self._sync.get_info, path, user=user)

    async def remove(self, path: str, user: Optional[str] = None) -> None:
        await _aio.call(self._sync.remove, path, user=user)

    async def rename(self, old_path: str, new_path: str, user: Optional[str] = None) -> EntryInfo:
        return await _aio.call(self._sync.rename, old_path, new_path, user=user)

    async def make_dir(self, path: str, user: Optional[str] = None) -> bool:
        return await _aio.call(self._sync.make_dir, path, user=user)

    async def watch_dir(
        self,
        path: str,
        recursive: bool = False,
        on_event: Optional[Callback] = None,
        user: Optional[str] = None,
    ) -> AsyncWatchHandle:
        """Watch a directory; see ``Filesystem.watch_dir``. ``on_event`` may
        be sync or async and runs on the event loop."""
        watcher_id = await _aio.call(self._sync._start_watch, path, recursive, user)
        return AsyncWatchHandle(self._sync, watcher_id, path, on_event)


# --------------------------------------------------------------------- pty
class AsyncPtyHandle:
    """A terminal session: ``async for chunk in handle`` or ``await handle.wait()``."""

    def __init__(self, pty: "AsyncPty", handle: PtyHandle, feed: Optional[_aio.Feed] = None) -> None:
        self._pty = pty
        self._handle = handle
        self._feed = feed

    @property
    def pid(self) -> int:
        return self._handle.pid

    @property
    def exit_code(self) -> Optional[int]:
        return self._handle.exit_code

    def _output(self) -> _aio.Feed:
        if self._feed is None or self._feed.finished:
            handle = self._handle
            self._feed = _aio.Feed(lambda emit: _aio.drain(handle, emit))
        return self._feed

    def __aiter__(self) -> _aio.Feed:
        """Output bytes until the terminal's process exits."""
        return self._output()

    async def wait(self, on_data: Optional[Callback] = None) -> int:
        """Read output until the process exits (``on_data`` gets each chunk);
        returns the exit code (-1 if the stream ended without one)."""
        feed = self._output()
        try:
            async for chunk in feed:
                if on_data is not None:
                    await _aio.maybe_await(on_data, chunk)
        finally:
            feed.abort()
        code = self._handle.exit_code
        return code if code is not None else -1

    async def send_stdin(self, data: Union[str, bytes]) -> None:
        await self._pty.send_stdin(self.pid, data)

    async def resize(self, size: PtySize) -> None:
        await self._pty.resize(self.pid, size)

    async def kill(self) -> bool:
        return await self._pty.kill(self.pid)

    async def disconnect(self) -> None:
        """Stop reading output; the terminal keeps running."""
        if self._feed is not None:
            self._feed.abort()

    def __repr__(self) -> str:
        return f"AsyncPtyHandle(pid={self.pid})"


class AsyncPty:
    """``sbx.pty`` of an ``AsyncSandbox``."""

    def __init__(self, pty: Pty) -> None:
        self._sync = pty

    async def _subscribed(self, start: Callable[[], PtyHandle]) -> AsyncPtyHandle:
        # The stream is opened by the feed's own thread, so cancelling the
        # reader (or disconnect) shuts that connection down.
        def producer(emit: Callable[[Any], None]) -> Optional[int]:
            handle = start()
            emit(handle)
            _aio.drain(handle, emit)
            return handle.exit_code

        feed = _aio.Feed(producer)
        handle = await feed.__anext__()
        return AsyncPtyHandle(self, handle, feed)

    async def create(
        self,
        size: Optional[PtySize] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        envs: Optional[Dict[str, str]] = None,
        timeout: Optional[int] = DEFAULT_PTY_TIMEOUT,
        cmd: Optional[str] = None,
    ) -> AsyncPtyHandle:
        """Start a terminal (``POST .../pty``) and subscribe to its output."""
        return await self._subscribed(
            lambda: self._sync.create(size=size, user=user, cwd=cwd, envs=envs, timeout=timeout, cmd=cmd)
        )

    async def connect(self, pid: int) -> AsyncPtyHandle:
        """Subscribe to an existing terminal's output."""
        return await self._subscribed(lambda: self._sync.connect(pid))

    async def send_stdin(self, pid: int, data: Union[str, bytes]) -> None:
        await _aio.call(self._sync.send_stdin, pid, data)

    async def resize(self, pid: int, size: PtySize) -> None:
        await _aio.call(self._sync.resize, pid, size)

    async def kill(self, pid: int) -> bool:
        return await _aio.call(self._sync.kill, pid)


# ------------------------------------------------------------------- stdio
class AsyncStdioHandle:
    """A process with open stdin. ``async for stream, chunk in handle``
    yields ``("stdout"|"stderr", bytes)``; ``await wait()`` returns the exit code."""

    def __init__(
        self,
        handle: StdioHandle,
        on_stdout: Optional[Callback] = None,
        on_stderr: Optional[Callback] = None,
    ) -> None:
        self._handle = handle
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._feed: Optional[_aio.Feed] = None

    @property
    def cmd_id(self) -> str:
        return self._handle.cmd_id

    @property
    def exit_code(self) -> Optional[int]:
        return self._handle.exit_code

    @property
    def last_entry_id(self) -> Optional[int]:
        return self._handle.last_entry_id

    async def send_stdin(self, data: Union[str, bytes]) -> None:
        await _aio.call(self._handle.send_stdin, data)

    async def close_stdin(self) -> None:
        """Send EOF to the process."""
        await _aio.call(self._handle.close_stdin)

    async def kill(self) -> bool:
        return await _aio.call(self._handle.kill)

    def _output(self) -> _aio.Feed:
        if self._feed is None or self._feed.finished:
            handle = self._handle
            self._feed = _aio.Feed(lambda emit: _aio.drain(handle, emit))
        return self._feed

    def __aiter__(self) -> _aio.Feed:
        return self._output()

    async def wait(self, on_stdout: Optional[Callback] = None, on_stderr: Optional[Callback] = None) -> int:
        """Read output until the process exits, awaiting the callbacks;
        returns the exit code (-1 if unknown)."""
        out_cb = on_stdout or self._on_stdout
        err_cb = on_stderr or self._on_stderr
        feed = self._output()
        try:
            async for kind, chunk in feed:
                cb = out_cb if kind == "stdout" else err_cb
                if cb is not None:
                    await _aio.maybe_await(cb, chunk)
        finally:
            feed.abort()
        code = self._handle.exit_code
        return code if code is not None else -1

    stream = wait

    async def disconnect(self) -> None:
        """Stop reading output; the process keeps running."""
        if self._feed is not None:
            self._feed.abort()

    def __repr__(self) -> str:
        return f"AsyncStdioHandle(cmd_id={self.cmd_id!r})"


class AsyncStdio:
    """``sbx.stdio`` of an ``AsyncSandbox``."""

    def __init__(self, stdio: Stdio) -> None:
        self._sync = stdio

    async def start(
        self,
        cmd: str,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        cwd: Optional[str] = None,
        on_stdout: Optional[Callback] = None,
        on_stderr: Optional[Callback] = None,
    ) -> AsyncStdioHandle:
        """Start ``cmd`` with an open stdin (``POST .../stdio``)."""
        handle = await _aio.call(self._sync.start, cmd, envs=envs, user=user, cwd=cwd)
        return AsyncStdioHandle(handle, on_stdout, on_stderr)

    def connect(
        self,
        cmd_id: str,
        on_stdout: Optional[Callback] = None,
        on_stderr: Optional[Callback] = None,
    ) -> AsyncStdioHandle:
        """A handle on an existing stdio process (no request is made)."""
        return AsyncStdioHandle(self._sync.connect(cmd_id), on_stdout, on_stderr)


# ------------------------------------------------------------------- audit
class AsyncAuditLog:
    """``sbx.audit`` of an ``AsyncSandbox``: ``await list(...)``, ``async for``."""

    def __init__(self, sandbox: "AsyncSandbox") -> None:
        self._sandbox = sandbox

    async def list(
        self,
        limit: Optional[int] = None,
        type: Optional[str] = None,
        since: Any = None,
        until: Any = None,
        cursor: Optional[str] = None,
    ) -> List[AuditEntry]:
        return await self._sandbox.audit_events(limit=limit, type=type, since=since, until=until, cursor=cursor)

    async def __aiter__(self) -> AsyncIterator[AuditEntry]:
        cursor = None
        while True:
            page = await self.list(limit=500, cursor=cursor)
            for entry in page:
                yield entry
            if len(page) < 500:
                return
            cursor = str(page[-1].id) if getattr(page[-1], "id", None) is not None else None
            if cursor is None:
                return


class AsyncSandboxListResult:
    """One page of ``AsyncSandbox.list``; ``await next_page()`` and
    ``async for info in result.iter_all()`` follow ``next_token``."""

    def __init__(self, page: SandboxListResult, fetch: Callable[[str], Any]) -> None:
        self.sandboxes: List[SandboxInfo] = page.sandboxes
        self.next_token: Optional[str] = page.next_token
        self._fetch = fetch

    @property
    def has_next(self) -> bool:
        return self.next_token is not None

    async def next_page(self) -> Optional["AsyncSandboxListResult"]:
        if self.next_token is None:
            return None
        return await self._fetch(self.next_token)

    async def iter_all(self) -> AsyncIterator[SandboxInfo]:
        page: Optional[AsyncSandboxListResult] = self
        while page is not None:
            for info in page.sandboxes:
                yield info
            page = await page.next_page()

    def __iter__(self) -> Iterator[SandboxInfo]:
        return iter(self.sandboxes)

    def __len__(self) -> int:
        return len(self.sandboxes)

    def __getitem__(self, i: int) -> SandboxInfo:
        return self.sandboxes[i]

    def __repr__(self) -> str:
        return f"AsyncSandboxListResult(sandboxes={self.sandboxes!r}, next_token={self.next_token!r})"


# ----------------------------------------------------------------- sandbox
class AsyncSandbox:
    """A Declaw sandbox for asyncio. Make one with
    ``await AsyncSandbox.create()`` or ``await AsyncSandbox.connect(id)``;
    ``async with`` kills it on exit.

    Besides ``sbx.commands``, ``sbx.files``, ``sbx.pty`` and ``sbx.stdio``
    it has flat methods: ``run_command``, ``list_commands``,
    ``kill_command``, ``connect_command``, ``send_command_stdin``,
    ``read_file``, ``write_file``, ``write_files``, ``list_files``,
    ``file_exists``, ``get_file_info``, ``remove_file``, ``rename_file``,
    ``make_dir``, ``watch_dir``.
    """

    def __init__(
        self,
        sandbox_id: str,
        connection_config: Optional[ConnectionConfig] = None,
        **kwargs: Any,
    ) -> None:
        self._attach(Sandbox(sandbox_id, connection_config, **kwargs))

    def _attach(self, sync: Sandbox) -> None:
        self._sync = sync
        self._commands = AsyncCommands(sync.commands)
        self._files = AsyncFilesystem(sync.files)
        self._pty = AsyncPty(sync.pty)
        self._stdio = AsyncStdio(sync.stdio)

    @classmethod
    def _wrap(cls, sync: Sandbox) -> "AsyncSandbox":
        obj = cls.__new__(cls)
        obj._attach(sync)
        return obj

    # ---------------------------------------------------------- properties
    @property
    def sandbox_id(self) -> str:
        return self._sync.sandbox_id

    @property
    def template_id(self) -> Optional[str]:
        return self._sync.template_id

    @property
    def envd_access_token(self) -> Optional[str]:
        return self._sync.envd_access_token

    @property
    def traffic_access_token(self) -> Optional[str]:
        return self._sync.traffic_access_token

    @property
    def sandbox_domain(self) -> Optional[str]:
        return self._sync.sandbox_domain

    @property
    def connection_config(self) -> ConnectionConfig:
        return self._sync.connection_config

    @property
    def restored_from(self) -> Optional[str]:
        return self._sync.restored_from

    @property
    def commands(self) -> AsyncCommands:
        return self._commands

    @property
    def files(self) -> AsyncFilesystem:
        return self._files

    @property
    def pty(self) -> AsyncPty:
        return self._pty

    @property
    def stdio(self) -> AsyncStdio:
        return self._stdio

    @property
    def audit(self) -> AsyncAuditLog:
        return AsyncAuditLog(self)

    @property
    def envd_api_url(self) -> str:
        return self._sync.envd_api_url

    def get_host(self, port: int) -> str:
        return self._sync.get_host(port)

    def get_mcp_url(self) -> str:
        return self._sync.get_mcp_url()

    async def create_port_token(
        self, port: int, ttl_seconds: Optional[int] = None, request_timeout: Optional[float] = None
    ) -> Dict[str, Any]:
        return await _aio.call(self._sync.create_port_token, port, ttl_seconds, request_timeout)

    async def get_signed_host(self, port: int, ttl_seconds: Optional[int] = None) -> str:
        return await _aio.call(self._sync.get_signed_host, port, ttl_seconds)

    def download_url(self, path: str, user: Optional[str] = None) -> str:
        return self._sync.download_url(path, user)

    def upload_url(self, path: str, user: Optional[str] = None) -> str:
        return self._sync.upload_url(path, user)

    # ----------------------------------------------------- create / connect
    @classmethod
    async def create(
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
    ) -> "AsyncSandbox":
        """Create a sandbox; see ``Sandbox.create`` (same request, same
        ``Idempotency-Key`` retries)."""
        sync = await _aio.call_long(
            Sandbox.create, template=template, timeout=timeout, metadata=metadata, envs=envs, secure=secure,
            allow_internet_access=allow_internet_access, network=network, security=security,
            lifecycle=lifecycle, api_key=api_key, domain=domain, request_timeout=request_timeout,
            cpu_count=cpu_count, memory_mb=memory_mb, disk_mb=disk_mb, volumes=volumes,
        )
        return cls._wrap(sync)

    @classmethod
    async def connect(
        cls,
        sandbox_id: str,
        timeout: Optional[int] = None,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> "AsyncSandbox":
        sync = await _aio.call(Sandbox.connect, sandbox_id, timeout=timeout, api_key=api_key, domain=domain,
                               request_timeout=request_timeout)
        return cls._wrap(sync)

    @classmethod
    async def list(
        cls,
        query: Optional[Union[SandboxQuery, Dict[str, Any]]] = None,
        limit: Optional[int] = None,
        next_token: Optional[str] = None,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> AsyncSandboxListResult:
        page = await _aio.call(Sandbox.list, query, limit, next_token, api_key=api_key, domain=domain,
                               request_timeout=request_timeout)

        def fetch(token: str) -> Any:
            return cls.list(query, limit, token, api_key=api_key, domain=domain, request_timeout=request_timeout)

        return AsyncSandboxListResult(page, fetch)

    # ---------------------------------------------------------------- kill
    async def _kill_instance(self, wait: bool = False, request_timeout: Optional[float] = None) -> bool:
        """Kill this sandbox (queued unless ``wait``); False if it did not exist."""
        return await _aio.call(self._sync.kill, wait=wait, request_timeout=request_timeout)

    async def _kill_class(
        cls,
        sandbox_id: str,
        wait: bool = False,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> bool:
        return await _aio.call(Sandbox.kill, sandbox_id, wait=wait, api_key=api_key, domain=domain,
                               request_timeout=request_timeout)

    kill = _dual(_kill_class, _kill_instance)

    @classmethod
    async def kill_by_id(cls, sandbox_id: str, **kw: Any) -> bool:
        return await _aio.call(Sandbox.kill_by_id, sandbox_id, **kw)

    @classmethod
    async def kill_many(
        cls,
        sandbox_ids: Sequence[str],
        wait: bool = False,
        api_key: Optional[str] = None,
        domain: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Dict[str, Dict[str, Any]]:
        return await _aio.call(Sandbox.kill_many, list(sandbox_ids), wait=wait, api_key=api_key, domain=domain,
                               request_timeout=request_timeout)

    # ------------------------------------------------------- info/timeout
    async def _set_timeout_instance(self, timeout: int, request_timeout: Optional[float] = None) -> None:
        await _aio.call(self._sync.set_timeout, timeout, request_timeout=request_timeout)

    async def _set_timeout_class(cls, sandbox_id: str, timeout: int, **kw: Any) -> None:
        await _aio.call(Sandbox.set_timeout, sandbox_id, timeout, **kw)

    set_timeout = _dual(_set_timeout_class, _set_timeout_instance)

    async def _get_info_instance(self) -> SandboxInfo:
        return await _aio.call(self._sync.get_info)

    async def _get_info_class(cls, sandbox_id: str, **kw: Any) -> SandboxInfo:
        return await _aio.call(Sandbox.get_info, sandbox_id, **kw)

    get_info = _dual(_get_info_class, _get_info_instance)

    async def is_running(self, request_timeout: Optional[float] = None) -> bool:
        return await _aio.call(self._sync.is_running, request_timeout=request_timeout)

    async def _get_metrics_instance(self, start: Any = None, end: Any = None) -> List[SandboxMetrics]:
        return await _aio.call(self._sync.get_metrics, start, end)

    async def _get_metrics_class(cls, sandbox_id: str, start: Any = None, end: Any = None, **kw: Any) -> List[SandboxMetrics]:
        return await _aio.call(Sandbox.get_metrics, sandbox_id, start, end, **kw)

    get_metrics = _dual(_get_metrics_class, _get_metrics_instance)

    # -------------------------------------------------------- pause/resume
    async def _pause_instance(self, request_timeout: Optional[float] = None) -> None:
        await _aio.call_long(self._sync.pause, request_timeout=request_timeout)

    async def _pause_class(cls, sandbox_id: str, **kw: Any) -> None:
        await _aio.call_long(Sandbox.pause, sandbox_id, **kw)

    pause = _dual(_pause_class, _pause_instance)

    async def _resume_instance(self, timeout: Optional[int] = None, request_timeout: Optional[float] = None) -> None:
        await _aio.call_long(self._sync.resume, timeout, request_timeout=request_timeout)

    async def _resume_class(cls, sandbox_id: str, timeout: Optional[int] = None, **kw: Any) -> "AsyncSandbox":
        return cls._wrap(await _aio.call_long(Sandbox.resume, sandbox_id, timeout, **kw))

    resume = _dual(_resume_class, _resume_instance)

    # ----------------------------------------------------------- snapshots
    async def create_snapshot(self, memory: bool = False, request_timeout: Optional[float] = None) -> SnapshotInfo:
        """See ``Sandbox.create_snapshot``."""
        return await _aio.call_long(self._sync.create_snapshot, memory=memory, request_timeout=request_timeout)

    snapshot = create_snapshot

    async def _list_snapshots_instance(self) -> List[SnapshotInfo]:
        return await _aio.call(self._sync.list_snapshots)

    async def _list_snapshots_class(cls, sandbox_id: str, **kw: Any) -> List[SnapshotInfo]:
        return await _aio.call(Sandbox.list_snapshots, sandbox_id, **kw)

    list_snapshots = _dual(_list_snapshots_class, _list_snapshots_instance)

    async def _delete_snapshot_instance(self, snapshot_id: str) -> bool:
        return await _aio.call(self._sync.delete_snapshot, snapshot_id)

    async def _delete_snapshot_class(cls, sandbox_id: str, snapshot_id: str, **kw: Any) -> bool:
        return await _aio.call(Sandbox.delete_snapshot, sandbox_id, snapshot_id, **kw)

    delete_snapshot = _dual(_delete_snapshot_class, _delete_snapshot_instance)

    async def _restore_instance(
        self, snapshot_id: Optional[str] = None, request_timeout: Optional[float] = None, *, fork: bool = False
    ) -> "AsyncSandbox":
        """Restore this sandbox in place (same id); see ``Sandbox.restore``."""
        return type(self)._wrap(
            await _aio.call_long(self._sync.restore, snapshot_id, request_timeout=request_timeout, fork=fork))

    async def _restore_class(cls, sandbox_id: str, snapshot_id: Optional[str] = None, **kw: Any) -> "AsyncSandbox":
        """Restore sandbox ``sandbox_id`` in place to a snapshot and return it
        (the same id); ``fork=True`` returns a NEW sandbox instead. See
        ``Sandbox.restore``."""
        return cls._wrap(await _aio.call_long(Sandbox.restore, sandbox_id, snapshot_id, **kw))

    restore = _dual(_restore_class, _restore_instance)

    # ------------------------------------------------------ network/audit
    async def update_network(
        self,
        network: Optional[Union[NetworkPolicy, Dict[str, Any]]] = None,
        *,
        allow_out: Optional[Sequence[str]] = None,
        deny_out: Optional[Sequence[str]] = None,
        allow_internet_access: Optional[bool] = None,
    ) -> SandboxInfo:
        return await _aio.call(self._sync.update_network, network, allow_out=allow_out, deny_out=deny_out,
                               allow_internet_access=allow_internet_access)

    async def audit_events(
        self,
        limit: Optional[int] = None,
        type: Optional[str] = None,
        since: Any = None,
        until: Any = None,
        cursor: Optional[str] = None,
    ) -> List[AuditEntry]:
        return await _aio.call(self._sync.audit_events, limit=limit, type=type, since=since, until=until,
                               cursor=cursor)

    get_audit_log = audit_events

    # -------------------------------------------------------- flat methods
    async def run_command(self, cmd: str, **kwargs: Any) -> Any:
        """``commands.run``."""
        return await self._commands.run(cmd, **kwargs)

    async def list_commands(self) -> List[ProcessInfo]:
        """``commands.list``."""
        return await self._commands.list()

    async def kill_command(self, pid: int) -> bool:
        """``commands.kill``."""
        return await self._commands.kill(pid)

    async def connect_command(self, pid: int, **kwargs: Any) -> AsyncCommandHandle:
        """``commands.connect``."""
        return await self._commands.connect(pid, **kwargs)

    async def send_command_stdin(self, pid: int, data: Union[str, bytes]) -> None:
        """``commands.send_stdin``."""
        await self._commands.send_stdin(pid, data)

    async def read_file(self, path: str, **kwargs: Any) -> Any:
        """``files.read``."""
        return await self._files.read(path, **kwargs)

    async def write_file(self, path: str, data: Any, **kwargs: Any) -> WriteInfo:
        """``files.write``."""
        return await self._files.write(path, data, **kwargs)

    async def write_files(self, files: Sequence[Any], **kwargs: Any) -> List[WriteInfo]:
        """``files.write_files``."""
        return await self._files.write_files(files, **kwargs)

    async def list_files(self, path: str, **kwargs: Any) -> List[EntryInfo]:
        """``files.list``."""
        return await self._files.list(path, **kwargs)

    async def file_exists(self, path: str, **kwargs: Any) -> bool:
        """``files.exists``."""
        return await self._files.exists(path, **kwargs)

    async def get_file_info(self, path: str, **kwargs: Any) -> EntryInfo:
        """``files.get_info``."""
        return await self._files.get_info(path, **kwargs)

    async def remove_file(self, path: str, **kwargs: Any) -> None:
        """``files.remove``."""
        await self._files.remove(path, **kwargs)

    async def rename_file(self, old_path: str, new_path: str, **kwargs: Any) -> EntryInfo:
        """``files.rename``."""
        return await self._files.rename(old_path, new_path, **kwargs)

    async def make_dir(self, path: str, **kwargs: Any) -> bool:
        """``files.make_dir``."""
        return await self._files.make_dir(path, **kwargs)

    async def watch_dir(self, path: str, **kwargs: Any) -> AsyncWatchHandle:
        """``files.watch_dir``."""
        return await self._files.watch_dir(path, **kwargs)

    # ------------------------------------------------------------- context
    async def close(self) -> None:
        """No-op (connections are pooled process-wide)."""

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await self.kill()
        except SandboxException:
            if exc_type is None:
                raise

    def __repr__(self) -> str:
        return f"AsyncSandbox(sandbox_id={self.sandbox_id!r}, api_url={self.connection_config.api_url!r})"
