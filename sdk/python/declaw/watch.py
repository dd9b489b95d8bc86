"""Directory watches: ``sandbox.files.watch_dir``.

``POST /sandboxes/{id}/files/watch`` ``{path, recursive}`` creates a
watcher (``{watcher_id}``); its events are read over SSE from
``GET .../files/watch/{watcher_id}/stream``: ``start``, then ``create``,
``write``, ``remove``, ``rename``, ``chmod`` ``{type, path, name, is_dir?,
timestamp, event_id}``, plus ``gap`` (events were lost) and ``error``.
``DELETE .../files/watch/{watcher_id}`` stops it. A dropped stream is
resumed with ``?last_event_id=N`` so no event is lost or repeated.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Deque, Iterator, List, Optional

from ._http import Response, path_segment
from .exceptions import NotFoundException, SandboxException
from .models import FilesystemEvent

if TYPE_CHECKING:  # pragma: no cover
    from .filesystem import Filesystem

__all__ = ["WatchHandle", "MAX_BUFFERED_EVENTS", "WATCH_READ_TIMEOUT"]

log = logging.getLogger("declaw")

#: Events kept for iteration / ``get_new_events`` before the oldest are
#: dropped (counted in ``WatchHandle.gaps``).
MAX_BUFFERED_EVENTS = 10000
#: The server sends a keepalive comment every 15 s; a stream silent for
#: this long is considered dead and is reopened.
WATCH_READ_TIMEOUT = 60.0
#: Consecutive reconnects without receiving anything before giving up.
MAX_RESUMES = 5

EventCallback = Callable[[FilesystemEvent], Any]


class _WatchState:
    """What both the sync and the async handle track about one watcher."""

    def __init__(self, watcher_id: str, path: str) -> None:
        self.watcher_id = watcher_id
        self.path = path
        self.last_event_id: Optional[int] = None
        self.gaps = 0
        self.errors: List[str] = []
        self.stopped = False
        self._lock = threading.Lock()
        self._resp: Optional[Response] = None

    def set_response(self, resp: Optional[Response]) -> None:
        with self._lock:
            self._resp = resp
            stopped = self.stopped
        if stopped and resp is not None:
            resp.abort()

    def abort(self) -> None:
        """Mark stopped and cut the current stream (from any thread)."""
        with self._lock:
            self.stopped = True
            resp = self._resp
        if resp is not None:
            resp.abort()


def watcher_path(watcher_id: str, suffix: str = "") -> str:
    return f"/files/watch/{path_segment(watcher_id)}{suffix}"


def iter_watch_events(files: "Filesystem", state: _WatchState) -> Iterator[FilesystemEvent]:
    """Yield the watcher's filesystem events until it is stopped or deleted,
    resuming a dropped stream after the last ``event_id`` seen."""
    resumes = 0
    while not state.stopped:
        query = {"last_event_id": state.last_event_id} if state.last_event_id is not None else None
        try:
            resp = files._request(
                "GET",
                watcher_path(state.watcher_id, "/stream"),
                query=query,
                stream=True,
                accept="text/event-stream",
                timeout=WATCH_READ_TIMEOUT,
            )
        except SandboxException:
            if state.stopped:
                return
            raise
        state.set_response(resp)
        try:
            for ev in resp.iter_sse():
                kind, obj = ev.payload()
                resumes = 0
                if kind == "start":
                    continue
                if kind == "gap":
                    state.gaps += 1
                    continue
                if kind == "error":
                    state.errors.append(str(obj.get("error") or obj.get("message") or "watch error"))
                    continue
                event = FilesystemEvent.from_dict(obj)
                if event.event_id is None and ev.id and ev.id.isdigit():
                    event.event_id = int(ev.id)
                if event.event_id is not None:
                    if state.last_event_id is not None and event.event_id <= state.last_event_id:
                        continue  # already delivered before a reconnect
                    state.last_event_id = event.event_id
                yield event
        except SandboxException as e:
            if state.stopped:
                return
            if e.status is not None:
                raise
            resumes += 1
            if resumes > MAX_RESUMES:
                raise
            time.sleep(min(2.0, 0.1 * resumes))
            continue  # resume after the last event seen
        finally:
            state.set_response(None)
            resp.close()
        return  # the stream ended: the watcher was deleted


class WatchHandle:
    """A running directory watch.

    A background thread reads the events. With ``on_event`` each event is
    passed to the callback (in that thread); otherwise events are buffered
    for iteration (``for ev in handle``, which blocks until the watch ends)
    and ``get_new_events()`` (which does not block). ``stop()`` (or leaving
    the ``with`` block) deletes the watcher.

    ``gaps`` counts the times events were lost (the server's or this
    handle's buffer overflowed); ``errors`` holds the server's ``error``
    messages (e.g. a new directory that could not be watched).
    """

    def __init__(
        self,
        files: "Filesystem",
        watcher_id: str,
        path: str,
        on_event: Optional[EventCallback] = None,
        on_exit: Optional[Callable[[Optional[BaseException]], Any]] = None,
    ) -> None:
        self._files = files
        self._state = _WatchState(watcher_id, path)
        self._on_event = on_event
        self._on_exit = on_exit
        self._events: Deque[FilesystemEvent] = collections.deque()
        self._cond = threading.Condition()
        self._done = False
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name=f"declaw-watch-{watcher_id}", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------- properties
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

    # -------------------------------------------------------------- reader
    def _run(self) -> None:
        error: Optional[BaseException] = None
        try:
            for event in iter_watch_events(self._files, self._state):
                if self._on_event is not None:
                    try:
                        self._on_event(event)
                    except Exception:  # a failing callback must not end the watch
                        log.exception("declaw: watch_dir on_event callback failed")
                    continue
                with self._cond:
                    if len(self._events) >= MAX_BUFFERED_EVENTS:
                        self._events.popleft()
                        self._state.gaps += 1
                    self._events.append(event)
                    self._cond.notify_all()
        except BaseException as e:  # reported to the reader
            error = e
        with self._cond:
            self._error = error
            self._done = True
            self._cond.notify_all()
        if self._on_exit is not None:
            try:
                self._on_exit(error)
            except Exception:
                log.exception("declaw: watch_dir on_exit callback failed")

    # ------------------------------------------------------------- reading
    def get_new_events(self) -> List[FilesystemEvent]:
        """The events received since the last call (does not block). Raises
        the error that ended the watch, once no buffered event is left."""
        with self._cond:
            events = list(self._events)
            self._events.clear()
            if not events and self._error is not None:
                err, self._error = self._error, None
                raise err
            return events

    def __iter__(self) -> Iterator[FilesystemEvent]:
        """Yield events as they arrive until the watch is stopped or the
        watcher deleted (raises the error that ended it, if any)."""
        while True:
            with self._cond:
                while not self._events and not self._done:
                    self._cond.wait()
                if self._events:
                    event = self._events.popleft()
                elif self._error is not None:
                    err, self._error = self._error, None
                    raise err
                else:
                    return
            yield event

    # ---------------------------------------------------------------- stop
    def stop(self, timeout: Optional[float] = 5.0) -> None:
        """Delete the watcher (``DELETE .../files/watch/{id}``; idempotent)
        and end the stream."""
        already = self._state.stopped
        self._state.abort()
        if not already:
            try:
                self._files._request("DELETE", watcher_path(self._state.watcher_id))
            except NotFoundException:
                pass
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    close = stop

    def __enter__(self) -> "WatchHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"WatchHandle(watcher_id={self._state.watcher_id!r}, path={self._state.path!r})"
