"""What runs on a worker: one chunk of inputs through the user's function, as one tight loop.

A chunk task never raises for the user's own errors: each input's result or exception is kept on its own,
so one bad input fails one input. A chunk task that fails is therefore the platform's failure (worker
died, lost, preempted), and the engine retries its inputs. The results travel as one buffer per chunk
(one pickle of the list of results); errors travel beside it, by position.

A chunk stops early once it has run ``budget_s`` (the engine re-queues the inputs it did not reach), so a
chunk sized from a misleading first measurement never holds a worker for long.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pickle
import threading
import time
import traceback
from collections import OrderedDict

import cloudpickle

from . import _env

_functions: OrderedDict[bytes, object] = OrderedDict()
_functions_lock = threading.Lock()

ONE, STAR, CALL = 0, 1, 2  # fn(x), fn(*x), fn(*x[0], **x[1])


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
            time.sleep(0.02)
            now = time.monotonic()
            with self.lock:
                for ident, deadline in list(self.deadlines.items()):
                    if now >= deadline:
                        del self.deadlines[ident]
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(ItemTimeout))


_watchdog = _Watchdog()


class _Setup(threading.local):
    seconds = 0.0  # per-worker set-up (``@burstlab.enter``) run in this thread during the current chunk


setup_clock = _Setup()


def _function(blob: bytes, scope: str = ""):
    digest = hashlib.sha1(blob).digest() + scope.encode()  # scope: a map's overlay may hold other modules
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


def _worker_address() -> str:
    from distributed import get_worker

    return get_worker().address


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except Exception:
        return f"pid-{os.getpid()}"


def _loop(fn, items: list, mode: int, budget_s: float, errors: list) -> list:
    """The hot loop: results by position (None where the input failed; its error goes to ``errors``)."""
    out: list = []
    append = out.append
    clock = time.perf_counter
    stop = clock() + budget_s
    i = 0
    for item in items:
        try:
            if mode == ONE:
                append(fn(item))
            elif mode == STAR:
                append(fn(*item))
            else:
                append(fn(*item[0], **item[1]))
        except Exception as exc:
            append(None)
            errors.append((i, pack_error(exc)))
        i += 1
        if clock() > stop:
            break
    return out


def _loop_with_timeout(fn, items: list, mode: int, budget_s: float, errors: list, timeout: float) -> list:
    out: list = []
    stop = time.perf_counter() + budget_s
    for i, item in enumerate(items):
        try:
            _watchdog.arm(timeout)
            try:
                if mode == ONE:
                    value = fn(item)
                elif mode == STAR:
                    value = fn(*item)
                else:
                    value = fn(*item[0], **item[1])
            finally:
                _watchdog.disarm()
                for _ in range(3):  # let a timeout raised at the last moment land inside this try
                    pass
            out.append(value)
        except ItemTimeout:
            out.append(None)
            errors.append((i, pack_error(TimeoutError(f"it ran longer than its timeout of {timeout:g} s"), 0)))
        except Exception as exc:
            out.append(None)
            errors.append((i, pack_error(exc)))
        if time.perf_counter() > stop:
            break
    return out


def _pack_results(out: list, errors: list) -> bytes:
    try:
        return pickle.dumps(out, protocol=5)
    except Exception:  # noqa: BLE001 - not plain-picklable: try cloudpickle next
        pass
    try:
        return cloudpickle.dumps(out, protocol=5)
    except Exception:  # noqa: BLE001 - some result cannot travel: find it below and fail its input alone
        pass
    bad = {pos for pos, _ in errors}
    for pos, value in enumerate(out):  # find the results that cannot travel; each fails its own input
        if pos in bad:
            continue
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            out[pos] = None
            errors.append((pos, pack_error(TypeError(
                f"its result ({type(value).__name__}) cannot be pickled: {exc}"), 0)))
    return cloudpickle.dumps(out, protocol=5)


def run_chunk(fn_blob: bytes, items_blob: bytes, mode: int, timeout: float | None, budget_s: float = 1e9,
              env_key: str = "") -> tuple:
    """Run ``fn`` over a chunk. Returns ``(worker, start_ns, stop_ns, ran, results_blob, errors, setup_s,
    setup_error, work_s)``: ``ran`` inputs were run (the rest were not reached within ``budget_s``); ``work_s``
    is the loop's and the results' pickling time less the set-up (what the next chunk's size is based on).

    ``env_key`` names the map's environment (``_env``): a worker that has not got it yet answers
    ``setup_error=("env", its address)`` having run nothing; a chunk that could not pass the worker's gate
    (another map's chunks held it) answers ``ran=0``."""
    start_ns = time.time_ns()
    env = None
    if env_key:
        env = _env.installed(env_key)
        if env is None:
            return (_worker_name(), start_ns, time.time_ns(), 0, b"", [], 0.0, (_env.NEED_ENV, _worker_address()), 0.0)
    if not _env.gate.enter(env_key, env):
        return (_worker_name(), start_ns, time.time_ns(), 0, b"", [], 0.0, None, 0.0)
    try:
        report = _run(fn_blob, items_blob, mode, timeout, budget_s, env_key, start_ns)
    finally:
        _env.gate.leave()
    if env is not None and env.redactor:
        report = _redacted(report, env)
    return report


def _run(fn_blob: bytes, items_blob: bytes, mode: int, timeout: float | None, budget_s: float, scope: str,
         start_ns: int) -> tuple:
    setup_clock.seconds = 0.0
    try:
        fn = _function(fn_blob, scope)
        items = pickle.loads(items_blob)
    except Exception as exc:  # the function or its inputs cannot be loaded here (a module missing on the worker)
        return (_worker_name(), start_ns, time.time_ns(), 0, b"", [], 0.0, pack_error(exc, skip_frames=0), 0.0)
    errors: list = []
    t0 = time.perf_counter()
    if timeout:
        out = _loop_with_timeout(fn, items, mode, budget_s, errors, timeout)
    else:
        out = _loop(fn, items, mode, budget_s, errors)
    loop_s = time.perf_counter() - t0 - setup_clock.seconds
    blob = _pack_results(out, errors)
    return (_worker_name(), start_ns, time.time_ns(), len(out), blob, errors, setup_clock.seconds, None,
            time.perf_counter() - t0 - setup_clock.seconds if len(out) > 1 else loop_s)


def secrets_found(env, name: str, data: bytes) -> bool:
    value = env.values[name]
    return len(value) >= 4 and value.encode("utf-8", "surrogatepass") in data


def _redacted(report: tuple, env) -> tuple:
    """The report with no secret's value in its errors or results (``_env``'s rules)."""
    redactor = env.redactor
    worker, start_ns, stop_ns, ran, blob, errors, setup_s, setup_error, work_s = report
    if setup_error is not None:
        setup_error = _env.redact_errors(redactor, [(0, setup_error)])[0][1]
    errors = _env.redact_errors(redactor, errors)
    if ran and redactor.found_in(blob):
        out = [_env.redact_value(redactor, v) for v in cloudpickle.loads(blob)]
        bad = {pos for pos, _ in errors}
        for pos, value in enumerate(out):
            held = cloudpickle.dumps(value) if pos not in bad else b""
            if redactor.found_in(held):
                names = [n for n in env.secret_names if secrets_found(env, n, held)]
                out[pos] = None
                errors.append((pos, pack_error(ValueError(
                    f"its result holds the value of the secret {', '.join(names)} (in something other than a "
                    "string, which burstlab cannot redact): return it without the secret"), 0)))
        blob = cloudpickle.dumps(out, protocol=5)
    return (worker, start_ns, stop_ns, ran, blob, errors, setup_s, setup_error, work_s)


__all__ = ["CALL", "ONE", "STAR", "ItemTimeout", "pack_error", "run_chunk", "setup_clock"]
