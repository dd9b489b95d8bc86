"""Bridge from the blocking HTTP client to asyncio (standard library only).

Every async call runs the blocking client in a worker thread bound to a
``CancelToken``; when the awaiting task is cancelled the token shuts the
worker's sockets down, so the request (or stream) really ends.

Streams are read by a thread that hands items to the event loop through an
``asyncio.Queue`` with a bounded window (a slow consumer stops the reader,
which stops reading the socket). Cancelling the consumer aborts the stream.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Optional

from ._http import CancelToken, set_cancel_token

__all__ = ["call", "call_long", "Feed", "maybe_await", "drain"]

#: Worker threads for short calls; long ones (foreground commands, waits,
#: streams) get their own thread so they never starve the pool.
MAX_WORKERS = 32
#: Stream items handed to the event loop before the reader thread waits.
STREAM_WINDOW = 64

_executor: Optional[ThreadPoolExecutor] = None
_executor_lock = threading.Lock()


def _get_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="declaw-async")
        return _executor


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def _settle(fut: "asyncio.Future[Any]", result: Any, error: Optional[BaseException]) -> None:
    if fut.done():
        return
    if error is not None:
        if isinstance(error, StopIteration):  # cannot be set on a future
            error = RuntimeError(repr(error))
        fut.set_exception(error)
    else:
        fut.set_result(result)


async def _run(fn: Callable[..., Any], args: Any, kwargs: Any, long: bool) -> Any:
    loop = asyncio.get_running_loop()
    fut: "asyncio.Future[Any]" = loop.create_future()
    token = CancelToken()

    def work() -> None:
        set_cancel_token(token)
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:  # handed to the awaiting task
            _post(loop, _settle, fut, None, e)
        else:
            _post(loop, _settle, fut, result, None)
        finally:
            set_cancel_token(None)

    if long:
        threading.Thread(target=work, name="declaw-async-call", daemon=True).start()
    else:
        _get_executor().submit(work)
    try:
        return await fut
    except asyncio.CancelledError:
        token.cancel()
        raise


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a short blocking SDK call in the worker pool."""
    return await _run(fn, args, kwargs, False)


async def call_long(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking SDK call that may take long in a thread of its own."""
    return await _run(fn, args, kwargs, True)


async def maybe_await(cb: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async callback."""
    result = cb(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class FeedClosed(Exception):
    """Raised in a feed's reader thread once the consumer closed the feed."""


def drain(items: Iterable[Any], emit: Callable[[Any], None]) -> None:
    """Emit every item of a (generator) iterable, closing it on the way out
    so its streamed response is closed as well."""
    it = iter(items)
    try:
        for item in it:
            emit(item)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


class _FeedState:
    """What a feed's reader thread shares with the consumer. The thread
    holds only this (never the ``Feed``), so a feed nobody references any
    more is collected and its ``__del__`` stops the thread."""

    def __init__(self, window: int, on_abort: Optional[Callable[[], None]]) -> None:
        self.token = CancelToken()
        self.window = threading.Semaphore(window)
        self.closed = False
        self.finished = False
        self.on_abort = on_abort
        self._lock = threading.Lock()

    def abort(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            was_finished, self.finished = self.finished, True
        if not was_finished:
            self.token.cancel()
            if self.on_abort is not None:
                try:
                    self.on_abort()
                except Exception:
                    pass
        self.window.release()  # wake a reader waiting for room


class Feed:
    """Async iterator over the items a blocking ``producer(emit)`` emits
    from a thread of its own. The producer's return value is ``result``
    once the iteration ends; its exception is raised to the consumer.

    ``abort()`` (also done when the consuming task is cancelled while it
    waits for an item, and when the feed is garbage-collected) shuts the
    producer's sockets down and ends the feed.
    """

    def __init__(
        self,
        producer: Callable[[Callable[[Any], None]], Any],
        on_abort: Optional[Callable[[], None]] = None,
        window: Optional[int] = None,
    ) -> None:
        self._producer: Optional[Callable[[Callable[[Any], None]], Any]] = producer
        self._state = _FeedState(window or STREAM_WINDOW, on_abort)
        self._queue: Optional["asyncio.Queue[Any]"] = None
        self.result: Any = None

    @property
    def finished(self) -> bool:
        return self._state.finished

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        queue: "asyncio.Queue[Any]" = asyncio.Queue()
        self._queue = queue
        state = self._state
        producer, self._producer = self._producer, None
        assert producer is not None

        def emit(item: Any) -> None:
            state.window.acquire()
            if state.closed:
                raise FeedClosed()
            _post(loop, queue.put_nowait, ("item", item))

        def work() -> None:
            set_cancel_token(state.token)
            try:
                msg = ("end", producer(emit))
            except BaseException as e:  # handed to the consumer
                msg = ("error", e)
            finally:
                set_cancel_token(None)
            _post(loop, queue.put_nowait, msg)

        threading.Thread(target=work, name="declaw-stream", daemon=True).start()

    def start(self) -> "Feed":
        """Start the reader thread now (it also starts on the first read)."""
        if self._queue is None and not self._state.finished:
            self._start()
        return self

    def __aiter__(self) -> "Feed":
        return self

    async def __anext__(self) -> Any:
        state = self._state
        if state.finished:
            raise StopAsyncIteration
        if self._queue is None:
            self._start()
        assert self._queue is not None
        try:
            kind, value = await self._queue.get()
        except asyncio.CancelledError:
            state.abort()
            raise
        if state.closed:
            state.finished = True
            raise StopAsyncIteration
        if kind == "item":
            state.window.release()
            return value
        state.finished = True
        if kind == "end":
            self.result = value
            raise StopAsyncIteration
        raise value

    def abort(self) -> None:
        """Stop reading: the stream's connection is shut down at once."""
        self._state.abort()

    async def aclose(self) -> None:
        self.abort()

    async def __aenter__(self) -> "Feed":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.abort()

    def __del__(self) -> None:
        state = getattr(self, "_state", None)
        if state is not None and not state.finished:
            state.abort()
