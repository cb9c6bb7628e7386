"""``Supervisor`` calls from a running event loop (Jupyter, an async web app): ``aask``, ``astream``, ``aapprove``.

The supervisor is synchronous underneath (a sync LangGraph graph over a sync SQLite
checkpointer). Its async calls run the sync ones on a worker thread of their own, one per
supervisor, so the event loop keeps running meanwhile and the calls made on one supervisor
run one at a time, in the order they were made, never interleaved. Different supervisors
have different workers.

Cancelling the task that awaits a call returns at once. A call still queued behind another
is dropped; one already running finishes on its worker (a graph step is never cut short:
its checkpoint and audit lines are written as usual) and its result is discarded. A stream
that is cancelled, or left early, stops at its next event: the worker closes the ``stream``
generator, so the node running then finishes and no further node starts; the thread keeps
the steps it took, and the worker is free for the next call.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

__all__ = ["call_on_worker", "stream_on_worker", "worker_of"]

T = TypeVar("T")

_WORKERS: weakref.WeakKeyDictionary[object, ThreadPoolExecutor] = weakref.WeakKeyDictionary()
_WORKERS_LOCK = threading.Lock()


def worker_of(owner: object) -> ThreadPoolExecutor:
    """``owner``'s one-thread executor, made on first use; it goes when ``owner`` is garbage collected."""
    with _WORKERS_LOCK:
        worker = _WORKERS.get(owner)
        if worker is None:
            worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlops-supervisor-worker")
            _WORKERS[owner] = worker
        return worker


async def call_on_worker(owner: object, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on ``owner``'s worker, after the calls queued before it; the caller's context
    variables go with it (as with ``asyncio.to_thread``)."""
    context = contextvars.copy_context()
    future = worker_of(owner).submit(context.run, functools.partial(fn, *args, **kwargs))
    return await asyncio.wrap_future(future)


async def stream_on_worker(owner: object, make: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """What the iterator ``make()`` yields, in order, produced on ``owner``'s worker.

    An exception the iterator raises is raised here, with its traceback. When this async
    iterator is closed before the end (the consuming task cancelled, ``break``, or garbage
    collected), the worker closes the iterator at its next item and is free again.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Literal["item", "error", "end"], Any]] = asyncio.Queue()
    stop = threading.Event()

    def put(kind: Literal["item", "error", "end"], value: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            stop.set()

    def produce() -> None:
        if stop.is_set():  # closed while it waited for the worker
            return
        iterator: Iterator[T] | None = None
        try:
            iterator = make()
            for item in iterator:
                put("item", item)
                if stop.is_set():
                    break
            else:
                put("end", None)
        except BaseException as exc:  # noqa: BLE001 - every failure reaches the consumer, else it waits forever
            put("error", exc)
        finally:
            close = getattr(iterator, "close", None) if iterator is not None else None
            if close is not None:
                close()  # a generator stops at its current yield (GeneratorExit inside it)

    context = contextvars.copy_context()
    future = worker_of(owner).submit(context.run, produce)
    try:
        while True:
            kind, value = await queue.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        future.cancel()  # dropped if it has not started; a running one sees ``stop`` at its next item
