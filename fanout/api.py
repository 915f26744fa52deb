"""The fan-out API: ``burstlab.map``, ``@burstlab.function`` and the verbs on a function object.

``Function.map`` returns a list in input order (``ordered=True``) or an iterator of results as they
finish (``ordered=False``); ``remote`` runs one call and waits; ``spawn`` starts one call and returns
a :class:`Call`. All of them check the function, the GPU spec and the first inputs before anything
starts, and share one engine (``_engine.MapRun``).
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import Future
from typing import Any, Callable, Iterable, Iterator

from ._engine import MapRun


def _workspace(workspace=None):
    if workspace is not None:
        return workspace
    from burstlab._default import default_workspace  # handed down by burstlab.workspace: no upward import

    return default_workspace()


class Call:
    """One call started with ``Function.spawn``: ``result()``, ``done()``, ``cancel()``."""

    def __init__(self, run: MapRun):
        self._run = run
        self._future: Future = Future()
        self._thread = threading.Thread(target=self._drive, name=f"burstlab-spawn-{run.name}", daemon=True)
        self._thread.start()

    def _drive(self) -> None:
        try:
            for _, ok, value in self._run:
                if ok:
                    self._future.set_result(value)
                else:
                    self._future.set_exception(value)
                return
        except BaseException as exc:
            if not self._future.done():
                self._future.set_exception(exc)
        finally:
            if not self._future.done():
                from burstlab.errors import FanoutError

                self._future.set_exception(FanoutError(f"The call to {self._run.name} was cancelled."))

    def result(self, timeout: float | None = None) -> Any:
        """The call's return value (waits); raises what the function raised, with its remote traceback."""
        return self._future.result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._future.exception(timeout)

    def done(self) -> bool:
        return self._future.done()

    def cancel(self) -> None:
        """Cancel the call; a running input finishes on its worker, whose GPU is then free."""
        self._run.cancel()

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        return f"<burstlab.Call {self._run.name} {state}>"


class Function:
    """A function that runs on the workspace's workers: ``f.remote(x)``, ``f.map(xs)``, ``f.spawn(x)``.

    Calling it directly (``f(x)``) runs it here, as if it were not decorated.
    """

    def __init__(self, fn: Callable, *, gpu: Any = None, retries: int = 0, retry_on: tuple = (),
                 timeout: float | None = None, max_workers: int | None = None, workspace=None):
        self.fn = fn
        self.gpu = gpu
        self.retries = retries
        self.retry_on = retry_on
        self.timeout = timeout
        self.max_workers = max_workers
        self.workspace = workspace
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def _run(self, items: Iterable[Any], *, star: bool, progress: Any, max_workers: int | None = None,
             return_exceptions: bool = False) -> MapRun:
        return MapRun(
            _workspace(self.workspace), self.fn, items, gpu=self.gpu, retries=self.retries, retry_on=self.retry_on,
            timeout=self.timeout, max_workers=max_workers or self.max_workers, return_exceptions=return_exceptions,
            progress=progress, star=star,
        )

    def map(self, items: Iterable[Any], *, ordered: bool = True, return_exceptions: bool = False,
            progress: Any = None, max_workers: int | None = None) -> list | Iterator:
        """Run the function once per input (``fn(item)``).

        ``ordered=True``: a list, in input order. ``ordered=False``: an iterator yielding results as they
        finish. Inputs are read lazily, a bounded window at a time, so a generator of millions is fine.
        A failed input raises its exception (with the remote traceback) and cancels the rest, unless
        ``return_exceptions=True`` puts exceptions in place of results. ``progress``: None shows it
        (a widget in a notebook, one line in a terminal), False hides it, a stream writes there.
        """
        run = self._run(items, star=False, progress=progress, max_workers=max_workers,
                        return_exceptions=return_exceptions)
        if not ordered:
            return (value for _, _, value in run)
        results: dict[int, Any] = {}
        try:
            for index, _, value in run:
                results[index] = value
        except KeyboardInterrupt:
            run.close()
            raise
        return [results[i] for i in range(len(results))]

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run one call on a worker and return its result."""
        return self.spawn(*args, **kwargs).result()

    def spawn(self, *args: Any, **kwargs: Any) -> Call:
        """Start one call on a worker; returns a :class:`Call` at once."""
        return Call(self._run([(args, kwargs)], star=True, progress=False))

    def __repr__(self) -> str:
        return f"<burstlab.Function {getattr(self.fn, '__qualname__', self.fn)!r} gpu={self.gpu!r}>"


def function(fn: Callable | None = None, *, gpu: Any = None, retries: int = 0, retry_on: tuple = (),
             timeout: float | None = None, max_workers: int | None = None, workspace=None):
    """Decorator: ``@burstlab.function(gpu="H100", retries=2, timeout=600)`` (or bare ``@burstlab.function``).

    ``gpu``: a spec as ``%%gpu`` takes it (``"H100"``, ``["H100", "A100"]``), or None for CPU workers.
    ``retries``: extra attempts per input after an infrastructure failure (a worker died or was lost);
    the function's own exceptions are retried only if ``retry_on`` names their type. ``timeout``:
    seconds one input may run (it then fails with TimeoutError). ``max_workers``: most workers at once.
    """
    def wrap(f: Callable) -> Function:
        return Function(f, gpu=gpu, retries=retries, retry_on=retry_on, timeout=timeout, max_workers=max_workers,
                        workspace=workspace)

    return wrap(fn) if fn is not None else wrap


def map(fn: Callable, items: Iterable[Any], *, gpu: Any = None, max_workers: int | None = None, retries: int = 0,
        retry_on: tuple = (), timeout: float | None = None, ordered: bool = True, return_exceptions: bool = False,
        progress: Any = None, workspace=None) -> list | Iterator:
    """``fn`` over ``items`` on the workspace's workers, in one call: ``Function(fn, ...).map(items)``."""
    return Function(fn, gpu=gpu, retries=retries, retry_on=retry_on, timeout=timeout, max_workers=max_workers,
                    workspace=workspace).map(items, ordered=ordered, return_exceptions=return_exceptions,
                                             progress=progress)


__all__ = ["Call", "Function", "function", "map"]
