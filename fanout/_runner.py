"""What runs on a worker: one chunk of inputs through the user's function, each input's outcome kept apart.

A chunk task never raises for the user's own errors: each input's result or exception comes back
pickled on its own, so one bad input fails one input. A chunk task that fails is therefore the
platform's failure (worker died, lost, preempted), and the engine retries its inputs.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
import time
import traceback
from collections import OrderedDict

import cloudpickle

_functions: OrderedDict[bytes, object] = OrderedDict()
_functions_lock = threading.Lock()


class ItemTimeout(TimeoutError):
    """Raised inside a worker thread whose input ran past its timeout."""


class _Watchdog:
    """One thread per worker process that raises ItemTimeout in threads whose input ran too long."""

    def __init__(self) -> None:
        self.deadlines: dict[int, float] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def arm(self, seconds: float) -> None:
        with self.lock:
            self.deadlines[threading.get_ident()] = time.monotonic() + seconds
            if self.thread is None:
                self.thread = threading.Thread(target=self._watch, name="burstlab-timeouts", daemon=True)
                self.thread.start()

    def disarm(self) -> None:
        with self.lock:
            self.deadlines.pop(threading.get_ident(), None)

    def _watch(self) -> None:
        while True:
            time.sleep(0.05)
            now = time.monotonic()
            with self.lock:
                for ident, deadline in list(self.deadlines.items()):
                    if now >= deadline:
                        del self.deadlines[ident]
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(ItemTimeout))


_watchdog = _Watchdog()


def _function(blob: bytes):
    digest = hashlib.sha1(blob).digest()
    with _functions_lock:
        fn = _functions.get(digest)
        if fn is not None:
            _functions.move_to_end(digest)
            return fn
    fn = cloudpickle.loads(blob)
    with _functions_lock:
        _functions[digest] = fn
        while len(_functions) > 16:
            _functions.popitem(last=False)
    return fn


def pack_error(exc: BaseException, skip_frames: int = 1) -> tuple:
    """``("err", pickled exception or None, type name, message, remote traceback text)``."""
    tb = exc.__traceback__
    for _ in range(skip_frames):  # drop our own frames; the user sees theirs
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    try:
        blob = cloudpickle.dumps(exc)
    except Exception:
        blob = None
    return ("err", blob, type(exc).__qualname__, str(exc), text)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except Exception:
        return f"pid-{os.getpid()}"


def run_chunk(fn_blob: bytes, items_blob: bytes, star: bool, timeout: float | None) -> bytes:
    """Run ``fn`` over a chunk; returns the pickled chunk report (see the module docstring)."""
    start_ns = time.time_ns()
    report: dict = {"worker": _worker_name(), "start_ns": start_ns, "results": []}
    try:
        fn = _function(fn_blob)
        items = cloudpickle.loads(items_blob)
    except Exception as exc:  # the function or its inputs cannot be loaded here (a module missing on the worker)
        report["setup_error"] = pack_error(exc, skip_frames=0)
        report["stop_ns"] = time.time_ns()
        return cloudpickle.dumps(report)
    results = report["results"]
    for item in items:
        t0 = time.perf_counter()
        try:
            if timeout:
                _watchdog.arm(timeout)
            try:
                value = fn(*item[0], **item[1]) if star else fn(item)
            finally:
                if timeout:
                    _watchdog.disarm()
                    for _ in range(3):  # let a timeout raised at the last moment land inside this try
                        pass
            try:
                outcome = ("ok", cloudpickle.dumps(value))
            except Exception as exc:
                outcome = pack_error(TypeError(f"its result ({type(value).__name__}) cannot be pickled: {exc}"), 0)
        except ItemTimeout:
            outcome = pack_error(TimeoutError(f"it ran longer than its timeout of {timeout:g} s"), 0)
        except Exception as exc:
            outcome = pack_error(exc)
        results.append((outcome, time.perf_counter() - t0))
    report["stop_ns"] = time.time_ns()
    return cloudpickle.dumps(report)


__all__ = ["ItemTimeout", "pack_error", "run_chunk"]
