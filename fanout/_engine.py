"""One map, running: lazy inputs in bounded chunks, results per input, retries, progress, metering.

The engine is blocking code over the workspace's own (blocking) Dask client: Dask already runs its
event loop on a thread of its own, and a map's only waiting is on a queue fed by Dask's future
callbacks, which Ctrl-C interrupts. Policy (chunk sizes, window, retries, cost) is in ``_policy``.
"""

from __future__ import annotations

import itertools
import queue
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import cloudpickle

from burstlab.billing.budgets import map_estimate_microusd
from burstlab.errors import FanoutError, GpuSpecError
from burstlab.gpus import SPEC_FORMS, impossible_count_message, parse_gpu_spec

from . import _policy
from ._metering import MapMeter
from ._progress import Progress
from ._runner import run_chunk

CPU = "CPU"


@dataclass
class Item:
    index: int
    value: Any
    attempts: int = 0


def describe(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pickle_function(fn: Any) -> bytes:
    """The function's bytes, or a FanoutError naming it and what in it cannot travel."""
    if not callable(fn):
        raise FanoutError(f"{_short(fn)} is not callable; pass a function (a def, a lambda, or a callable object).")
    try:
        return cloudpickle.dumps(fn)
    except Exception as exc:
        raise FanoutError(
            f"The function {describe(fn)!r} cannot be sent to the workers: {type(exc).__name__}: {exc}. "
            "It (or something it refers to: a global, a closure variable, a default argument) cannot be "
            "pickled. Create such objects inside the function instead."
        ) from exc


def pickle_items(items: list[Item]) -> bytes:
    try:
        return cloudpickle.dumps([it.value for it in items])
    except Exception:
        for it in items:
            try:
                cloudpickle.dumps(it.value)
            except Exception as exc:
                raise FanoutError(
                    f"Input #{it.index} ({_short(it.value)}) cannot be sent to the workers: "
                    f"{type(exc).__name__}: {exc}. Pass something picklable (a path, a number, a string) "
                    "and open the resource inside the function."
                ) from exc
        raise


def resolve_target(client, gpu: Any, slots_hint=None) -> tuple[str, dict, bool, int]:
    """``(resource, task resources, declared, slots)`` for a ``gpu=`` spec on this cluster, or raise."""
    from burstlab.remote_kernel.cluster import slots as gpu_slots
    from burstlab.remote_kernel.cluster import supply

    have = supply(client)
    if gpu is None:
        if CPU in have:
            return CPU, {CPU: 1}, False, int(have[CPU][3])
        threads = sum(w.get("nthreads", 1) for w in client.scheduler_info(n_workers=-1)["workers"].values())
        return CPU, {}, False, max(1, threads)
    gpu_types = {s.type: s for s in gpu_slots(client)}
    spec = parse_gpu_spec(gpu, available=gpu_types)
    for request in spec.choices:
        if request.type not in gpu_types:
            continue
        most = have.get(request.type, (0, 0, 0, 0))[0]
        if most < request.count:
            raise GpuSpecError(impossible_count_message(
                request, int(most), per="worker",
                fix=f"Ask for gpu={request.type!r} (one GPU per input), or hold several GPUs in one session with "
                    f"%%gpu {request.type}:{request.count}."))
        declared = gpu_types[request.type].source == "declared"
        return request.type, {request.type: request.count}, declared, int(have[request.type][3] // request.count)
    raise GpuSpecError(f"No GPU type of {gpu!r} exists here. Valid forms: {SPEC_FORMS}.")  # pragma: no cover


class MapRun:
    """One map over ``items``; iterate it for ``(index, ok, value_or_exception)`` as inputs finish."""

    def __init__(self, workspace, fn: Any, items: Iterable[Any], *, gpu: Any = None, retries: int = 0,
                 retry_on: tuple = (), timeout: float | None = None, max_workers: int | None = None,
                 return_exceptions: bool = False, progress: Any = None, star: bool = False, name: str | None = None):
        if retries < 0:
            raise FanoutError(f"retries={retries}: give a number of extra attempts, 0 or more.")
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        self.ws = workspace
        self.client = workspace.client
        self.name = name or describe(fn)
        self.fn_blob = pickle_function(fn)
        self.retries = retries
        self.retry_on = tuple(retry_on)
        self.timeout = timeout
        self.star = star
        self.return_exceptions = return_exceptions
        self.resource, self.resources, self.declared, cluster_slots = resolve_target(self.client, gpu)
        self.slots = max(1, min(cluster_slots, max_workers or cluster_slots))
        self.window = _policy.window(self.slots)
        self.id = uuid.uuid4().hex[:12]
        try:
            self.total: int | None = len(items)  # type: ignore[arg-type]
        except TypeError:
            self.total = None
        self._source = iter(items)
        self._next_index = 0
        self._retry: deque[Item] = deque()
        self._exhausted = False
        self._inflight: dict[Any, list[Item]] = {}
        self._done_q: queue.Queue = queue.Queue()
        self._per_item_s: float | None = None
        self._last_size = 1
        self._seq = itertools.count()
        self.done = self.failed = self.retried = 0
        self.rate = workspace.meter.rates.rate(self.resource)
        self.quantity = int(next(iter(self.resources.values()), 1))
        self.metering = MapMeter(workspace, map_id=self.id, name=self.name, resource=self.resource,
                                 quantity=self.quantity, declared=self.declared, key_prefix=self._key(""))
        self.spans = self.metering.spans
        self._stop_error: BaseException | None = None  # set by the budget watcher: raised in the map's thread
        self._estimate_noted = False
        self._cut_short = False  # cancelled with work in flight: close the workers' intervals at the stop
        self._watcher = getattr(workspace, "watcher", None)
        if self._watcher is not None:  # refused with the numbers if a budget is spent
            self._watcher.admit(user=workspace.user, notebook=workspace.notebook, what=f"the map {self.name}",
                                start_microusd=self.metering.start_cost_microusd())
        self._slot_cycle = None  # set per fill by _placements()
        self.started = time.monotonic()
        self.started_wall = time.time()
        self._published = 0.0
        self._stop_reason = ""
        self.progress = Progress.make(progress, self.name, self.total)
        self._workers_up = 0
        self._workers_checked = 0.0
        self._starts_checked = 0.0
        self._closed = False
        self._first: list[Item] | None = None
        self._first = self._take()  # the first chunk is checked before anything starts
        if self._first:
            self._first_blob = pickle_items(self._first)
        if self._watcher is not None:
            self._watcher.track(self)

    # -- inputs ---------------------------------------------------------------------------------

    def _take(self) -> list[Item]:
        if self._retry:
            chunk = [self._retry.popleft()]
            while self._retry and len(chunk) < self._last_size and self._retry[0].attempts == chunk[0].attempts:
                chunk.append(self._retry.popleft())
            return chunk
        if self._exhausted:
            return []
        remaining = None if self.total is None else self.total - self._next_index
        size = _policy.chunk_size(self._per_item_s, self._last_size, self.slots, remaining)
        chunk = []
        for value in itertools.islice(self._source, size):
            chunk.append(Item(self._next_index, value))
            self._next_index += 1
        if len(chunk) < size:
            self._exhausted = True
        if chunk:
            self._last_size = len(chunk)
        return chunk

    def _submit(self, chunk: list[Item], blob: bytes | None = None) -> None:
        blob = blob if blob is not None else pickle_items(chunk)
        future = self.client.submit(
            run_chunk, self.fn_blob, blob, self.star, self.timeout, key=self._key(next(self._seq)), pure=False,
            resources=self.resources if self._slot_cycle is None else {**self.resources, next(self._slot_cycle): 1},
        )
        self._inflight[future] = chunk
        future.add_done_callback(self._done_q.put)

    def _key(self, seq) -> str:
        return f"burstlab-map-{self.name[:40]}-{self.id}-{seq}"

    def _placements(self) -> None:
        """Pin GPU chunks to GPUs no %%gpu session holds: Dask would queue a resource-restricted task
        behind a session's lease on a worker that merely *has* the resource, for the session's life."""
        self._slot_cycle = None
        if self.resource == CPU or not self.resources:
            return
        from burstlab.remote_kernel.cluster import leased_slot_resources, slots

        leased = leased_slot_resources(self.client)
        free = [s.resource for s in slots(self.client) if s.type == self.resource and s.resource and s.resource not in leased]
        if free and leased:  # only when a session holds one of this type; else let Dask balance
            self._slot_cycle = itertools.cycle(free)

    def _fill(self) -> None:
        self._placements()
        if self._first is not None:
            first, self._first = self._first, None
            if first:
                self._submit(first, self._first_blob)
        while len(self._inflight) < self.window:
            chunk = self._take()
            if not chunk:
                return
            self._submit(chunk)

    # -- results --------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[int, bool, Any]]:
        try:
            self._fill()
            while self._inflight:
                try:
                    ready = [self._done_q.get(timeout=0.25)]
                except queue.Empty:
                    ready = []
                if not ready:
                    self._tick()
                    self._check_stop()
                    self._check_workers()
                    continue
                while True:
                    try:
                        ready.append(self._done_q.get_nowait())
                    except queue.Empty:
                        break
                yield from self._collect([f for f in ready if f in self._inflight])
                self._check_stop()
                self._fill()
                self._tick()
        finally:
            self.close()

    def stop_for(self, exc: BaseException) -> None:
        """Stop this map from another thread (the budget watcher): its own thread cancels what is left
        and raises ``exc`` within a moment."""
        self._stop_error = exc
        self._done_q.put(None)  # wake the map's thread if it is waiting for a result

    def _check_workers(self) -> None:
        """Raise at once if no worker of this map's kind is up and one failed to start since the map began
        (a crashing preload, a missing package): waiting would never end."""
        now = time.monotonic()
        if now - self._starts_checked < 0.5 or self.done + self.failed:
            return
        self._starts_checked = now
        try:
            errors = self.client.run_on_scheduler(_scheduler_start_errors, self.started_wall - 1.0)
        except Exception:
            return
        mine = {n: e for n, e in errors.items() if (n.split("/") + ["", "", ""])[2] == self.resource}
        if mine and not self.workers_up(fresh=True):
            name, error = sorted(mine.items())[0]
            self.cancel()
            raise FanoutError(
                f"The map {self.name} cannot run: no {self.resource} worker is up, and the worker {name} failed to "
                f"start: {error}. Fix what its start-up runs (a worker preload, the environment, an installed "
                "package) and run the map again; the cluster retries the worker on the next demand."
            )

    def _check_stop(self) -> None:
        if self._stop_error is not None:
            self.cancel()
            raise self._stop_error
        if self._stop_reason:
            self.cancel()
            raise FanoutError(f"The map {self.name} ({self.id}) was cancelled: {self._stop_reason}. "
                              f"{self.done} of {self.total if self.total is not None else '?'} inputs had finished.")

    def _collect(self, futures: list) -> Iterator[tuple[int, bool, Any]]:
        finished = [f for f in futures if f.status == "finished"]
        failed = [f for f in futures if f.status != "finished"]
        blobs = self.client.gather(finished, errors="skip") if finished else []
        if len(blobs) != len(finished):  # one was lost between done and gather: treat it as failed
            blobs, failed = [], failed + finished
            finished = []
        for future, blob in zip(finished, blobs):
            chunk = self._inflight.pop(future)
            future.release()
            yield from self._chunk_results(chunk, cloudpickle.loads(blob))
        for future in failed:
            chunk = self._inflight.pop(future)
            reason = self._infra_reason(future)
            future.release()
            for item in chunk:
                item.attempts += 1
                if _policy.should_retry(item.attempts, self.retries, True, None, self.retry_on):
                    self.retried += 1
                    self._retry.append(item)
                else:
                    err = FanoutError(
                        f"Input #{item.index} of {self.name} failed after {item.attempts} attempt"
                        f"{'s' if item.attempts != 1 else ''} ({reason}). Give it more with retries=N."
                    )
                    yield self._failure(item, err)

    def _infra_reason(self, future) -> str:
        if future.status == "cancelled":
            return "its task was cancelled by the cluster"
        try:
            exc = future.exception(timeout=5)
        except Exception as e:  # the exception itself may not come back
            exc = e
        name = type(exc).__name__
        if name == "KilledWorker":
            return "the worker running it died"
        return f"{name}: {exc}"

    def _chunk_results(self, chunk: list[Item], report: dict) -> Iterator[tuple[int, bool, Any]]:
        self.metering.report(report["worker"], report["start_ns"], report["stop_ns"])
        if "setup_error" in report:
            exc = _rebuild(report["setup_error"])
            for item in chunk:
                item.attempts += 1
                yield self._failure(item, exc, attempts=item.attempts)
            return
        seconds = 0.0
        for item, (outcome, dt) in zip(chunk, report["results"]):
            seconds += dt
            item.attempts += 1
            if outcome[0] == "ok":
                self.done += 1
                yield item.index, True, cloudpickle.loads(outcome[1])
                continue
            exc = _rebuild(outcome)
            if _policy.should_retry(item.attempts, self.retries, False, exc, self.retry_on):
                self.retried += 1
                self._retry.append(item)
                continue
            yield self._failure(item, exc, attempts=item.attempts)
        self._per_item_s = _policy.update_rate(self._per_item_s, seconds, len(report["results"]))

    def _failure(self, item: Item, exc: BaseException, attempts: int | None = None) -> tuple[int, bool, Any]:
        self.failed += 1
        if attempts is not None:
            _add_note(exc, f"(input #{item.index} of {self.name}: failed on attempt {attempts} "
                           f"of at most {self.retries + 1})")
        if not self.return_exceptions:
            raise exc
        return item.index, False, exc

    # -- progress, money, the end -------------------------------------------------------------------

    def cost_microusd(self) -> int:
        """What the map has cost so far (its workers' open intervals priced up to now)."""
        return self.metering.cost_microusd()

    def estimate_microusd(self) -> int | None:
        """What the inputs not yet finished should cost, from the measured seconds per input."""
        return map_estimate_microusd(self.total, self.done + self.failed, self._per_item_s, self.rate, self.quantity)

    def workers_up(self, fresh: bool = False) -> int:
        now = time.monotonic()
        if fresh or now - self._workers_checked > 1.0:
            from burstlab.remote_kernel.cluster import supply

            self._workers_checked = now
            try:
                self._workers_up = int(supply(self.client).get(self.resource, (0, 0))[1])
            except Exception:
                pass
        return self._workers_up

    def _publish(self, final: bool = False) -> None:
        """Keep this map's record on the scheduler current (at most once a second), so the lab and
        the REST API list it; learn there whether someone asked it to stop."""
        now = time.monotonic()
        if not final and now - self._published < 1.0:
            return
        self._published = now
        from burstlab.remote_kernel import registry

        if final:
            state = "cancelled" if self._stop_reason else ("failed" if self.failed else "done")
        else:
            state = "running"
        try:
            reason = registry.publish(self.client, "map", self.id, {
                "id": self.id, "name": self.name, "user": self.ws.user, "notebook": self.ws.notebook,
                "gpu": self.resource, "total": self.total, "done": self.done, "failed": self.failed,
                "running": sum(len(c) for c in self._inflight.values()), "state": state,
                "started": self.started_wall, "cost_microusd": self.cost_microusd(), "owner": self.client.id,
            })
        except Exception:  # the listing is a view: a map never fails because it cannot be shown
            return
        if reason and not final:
            self._stop_reason = reason

    def _tick(self, final: bool = False) -> None:
        if not final:
            self.metering.poll(self.client)
        self._publish(final)
        estimate = None if final else self.estimate_microusd()
        if estimate is not None and not self._estimate_noted and self._watcher is not None:
            self._estimate_noted = True  # checked once, from the first measured inputs
            note = self._watcher.estimate_note(user=self.ws.user, notebook=self.ws.notebook, name=self.name,
                                               estimate_microusd=estimate)
            if note:
                import sys

                (self.progress.stream if self.progress is not None else sys.stderr).write(f"[burstlab: {note}]\n")
        if self.progress is not None:
            self.progress.update(done=self.done, failed=self.failed, retried=self.retried,
                                 workers=self.workers_up(final), elapsed=time.monotonic() - self.started,
                                 cost_microusd=self.cost_microusd(), final=final, estimate_microusd=estimate)

    def cancel(self) -> None:
        """Cancel every input not finished; workers become idle (and stop after the idle window).

        A GPU worker still running a cancelled input after a short grace is restarted, so its GPU is
        free at once (a thread cannot be stopped; the process can). A GPU worker runs one task at a
        time, so nothing else (no session) is on it.
        """
        futures = list(self._inflight)
        self._cut_short = self._cut_short or bool(futures or self._retry)  # workers were held until now
        self._inflight.clear()
        self._retry.clear()
        self._exhausted = True
        if not futures:
            return
        keys = [f.key for f in futures]
        try:
            self.client.cancel(futures, force=True)
            if self.resource != CPU:
                time.sleep(0.3)
                self.client.run(_stop_if_executing, keys, on_error="ignore")
        except Exception:
            pass

    def close(self) -> None:
        """Cancel what is left, write the ledger rows, close the progress display (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.cancel()
        clean = not self._cut_short
        try:
            self.metering.close(clean, self.done + self.failed)
        finally:
            if self._watcher is not None:
                self._watcher.untrack(self)
            self._tick(final=True)


def _scheduler_start_errors(since: float, dask_scheduler=None) -> dict[str, str]:
    """Runs on the scheduler: worker name -> error, for the workers that failed to start since ``since``."""
    errors = getattr(dask_scheduler, "_burstlab_start_errors", None) or {}
    return {name: error for name, (when, error) in errors.items() if when >= since}


def _stop_if_executing(keys: list, dask_worker=None) -> bool:
    """Runs on each worker: if it still executes one of ``keys``, its process exits (its Nanny starts
    a fresh one). Only GPU workers are asked; they run one task at a time, so nothing else is lost."""
    import os

    tasks = dask_worker.state.tasks
    if any(k in tasks and tasks[k].state in ("executing", "long-running", "cancelled") for k in keys):
        os._exit(1)  # at once: no new task may land on it meanwhile
    return False


def _add_note(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note"):
        exc.add_note(note)


def _rebuild(packed: tuple) -> BaseException:
    """The user's exception from a worker, carrying the remote traceback (shown by IPython)."""
    _, blob, type_name, message, remote_tb = packed
    exc: BaseException | None = None
    if blob is not None:
        try:
            exc = cloudpickle.loads(blob)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = FanoutError(f"{type_name}: {message}")
    exc.remote_traceback = remote_tb  # type: ignore[attr-defined]
    _add_note(exc, "Remote traceback:\n" + remote_tb.rstrip())
    tb_lines = [remote_tb]
    exc._render_traceback_ = lambda: tb_lines  # type: ignore[attr-defined]
    return exc


__all__ = ["MapRun", "describe", "pickle_function", "resolve_target"]
