"""One explicit way to call burstlab's async core from blocking code.

``run_sync(coro)`` runs the coroutine on a private event-loop thread (one per process, started on
first use), so it works the same inside ipykernel (whose loop is already running) and in a plain
script. A KeyboardInterrupt in the caller is not swallowed: the caller decides what to do with the
still-running coroutine (``%%gpu`` forwards it to the remote kernel as an interrupt).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def loop() -> asyncio.AbstractEventLoop:
    """The private loop, started on a daemon thread the first time it is needed."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            new_loop = asyncio.new_event_loop()
            ready = threading.Event()

            def _run() -> None:
                asyncio.set_event_loop(new_loop)
                new_loop.call_soon(ready.set)
                new_loop.run_forever()

            threading.Thread(target=_run, name="burstlab-loop", daemon=True).start()
            ready.wait()
            _loop = new_loop
        return _loop


def submit(coro: Awaitable[T]) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on the private loop; returns a concurrent future."""
    return asyncio.run_coroutine_threadsafe(coro, loop())  # type: ignore[arg-type]


def run_sync(coro: Awaitable[T], timeout: float | None = None) -> T:
    """Run ``coro`` on the private loop and wait for its result."""
    return submit(coro).result(timeout)


def run_interruptible(coro: Awaitable[T], interrupt: Callable[[], Awaitable[Any]]) -> T:
    """Like ``run_sync``, but a KeyboardInterrupt in the caller (Ctrl-C, the notebook's stop button)
    schedules ``interrupt()`` and keeps waiting: the run ends as the interrupted code decides (with
    its own KeyboardInterrupt as data), not by abandoning it."""
    future = submit(coro)
    while True:
        try:
            return future.result()
        except KeyboardInterrupt:
            submit(interrupt())


__all__ = ["loop", "run_interruptible", "run_sync", "submit"]
