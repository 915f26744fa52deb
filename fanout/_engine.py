"""One map, running: lazy inputs in bounded chunks, results per input, retries, checkpoints, metering.

The engine is blocking code over the workspace's own (blocking) Dask client: Dask already runs its
event loop on a thread of its own, and a map's only waiting is on a queue fed by Dask's future
callbacks, which Ctrl-C interrupts. Policy (chunk sizes, window, retries, cost) is in ``_policy``;
progress, cost and visibility in ``_status``; the results store in ``_checkpoint``.

Iterating a ``MapRun`` yields *batches* ``(indices, values)``: one per chunk that came back (values in
the indices' order; a failed input's exception in its place when ``return_exceptions``). Nothing in the
hot path is per input on this side: a chunk is a range of indices and a list, its results one buffer.
"""

from __future__ import annotations

import heapq
import io
import itertools
import os
import pickle
import queue
import socket
import time
import uuid
from collections import deque
from typing import Any, Iterable, Iterator

import cloudpickle

from burstlab.errors import FanoutError, GpuSpecError
from burstlab.gpus import CPU, SPEC_FORMS, impossible_count_message, parse_gpu_spec

from . import _policy
from ._checkpoint import Checkpoint, Resume, chunk_digest, dumps, function_digest
from ._env import NEED_ENV, MapEnv
from ._metering import MapMeter
from ._progress import Progress
from ._runner import ONE, run_chunk
from ._status import MapStatus
from ._view import ClusterView, view


class Chunk:
    __slots__ = ("indices", "values", "attempts", "blob")

    def __init__(self, indices, values: list, attempts: list | None = None):
        self.indices = indices  # a range (fresh inputs) or a list of input indices
        self.values = values
        self.attempts = attempts  # attempts made so far per input; None: none yet
        self.blob: bytes | None = None


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


def pickle_items(indices, values: list) -> bytes:
    try:
        return pickle.dumps(values, protocol=5)  # the fast path: nothing per input here
    except Exception:
        pass
    for index, value in zip(indices, values):  # the C pickler refused something: an open file is named first
        if isinstance(value, io.IOBase):  # cloudpickle would send a copy of its contents (a StringIO), not the file
            name = getattr(value, "name", None)
            raise FanoutError(
                f"Input #{index} is an open file{f' ({name})' if isinstance(name, str) else ''}: a file handle "
                "cannot travel to the workers. Pass its path (and open it inside the function), or its contents."
            )
    try:
        return dumps(values)
    except Exception:
        for index, value in zip(indices, values):
            try:
                cloudpickle.dumps(value)
            except Exception as exc:
                raise FanoutError(
                    f"Input #{index} ({_short(value)}) cannot be sent to the workers: "
                    f"{type(exc).__name__}: {exc}. Pass something picklable (a path, a number, a string) "
                    "and open the resource inside the function."
                ) from exc
        raise


def resolve_target(client, gpu: Any, cluster: ClusterView | None = None) -> tuple[str, dict, bool, int]:
    """``(resource, task resources, declared, slots)`` for a ``gpu=`` spec on this cluster, or raise.

    With fallbacks (``["H100", "A100"]``) the first type that has a GPU no session holds wins; when
    every type is fully held, the first that exists (the map then waits for it)."""
    cluster = cluster or view(client)
    have = cluster.supply
    if gpu is None:
        if CPU in have:
            return CPU, {CPU: 1}, False, int(have[CPU][3])
        threads = sum(w.get("nthreads", 1) for w in client.scheduler_info(n_workers=-1)["workers"].values())
        return CPU, {}, False, max(1, threads)
    gpu_types = cluster.types()
    spec = parse_gpu_spec(gpu, available=gpu_types)
    choices = [r for r in spec.choices if r.type in gpu_types]
    if len(choices) > 1:
        free = {r.type for r in choices if cluster.unheld(r.type) >= r.count}
        choices = [r for r in choices if r.type in free] + [r for r in choices if r.type not in free]
    for request in choices:
        most = have.get(request.type, (0, 0, 0, 0))[0]
        if most < request.count:
            raise GpuSpecError(impossible_count_message(
                request, int(most), per="worker",
                fix=f"Ask for gpu={request.type!r} (one GPU per input), or hold several GPUs in one session with "
                    f"%%gpu {request.type}:{request.count}."))
        declared = gpu_types[request.type] == "declared"
        return request.type, {request.type: request.count}, declared, int(have[request.type][3] // request.count)
    raise GpuSpecError(f"No GPU type of {gpu!r} exists here. Valid forms: {SPEC_FORMS}.")  # pragma: no cover


class MapRun(MapStatus):
    """One map over ``items``; iterate it for ``(indices, values)`` batches as chunks finish."""

    def __init__(self, workspace, fn: Any, items: Iterable[Any], *, gpu: Any = None, retries: Any = 0,
                 retry_on: tuple = (), timeout: float | None = None, max_workers: int | None = None,
                 max_inputs: int | None = None, return_exceptions: bool = False, progress: Any = None,
                 mode: int = ONE, name: str | None = None, checkpoint: Any = None, map_id: str | None = None,
                 env: Any = None, secrets: Any = None, sync: bool | None = None):
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        self.backoff: _policy.Retries | None = None
        if isinstance(retries, _policy.Retries):
            self.backoff = retries
            retry_on = tuple(retry_on) + tuple(retries.retry_on)
            retries = retries.max_retries
        if not isinstance(retries, int) or retries < 0:
            raise FanoutError(f"retries={retries!r}: give a number of extra attempts (0 or more) or burstlab.Retries.")
        if max_inputs is not None and max_inputs < 1:
            raise FanoutError(f"max_inputs={max_inputs}: give how many inputs may run at once, 1 or more.")
        self.ws = workspace
        self.client = workspace.client
        self.name = name or describe(fn)
        self.fn_blob = pickle_function(fn)
        self.retries = retries
        self.retry_on = tuple(retry_on)
        self.timeout = timeout
        self.mode = mode
        self.return_exceptions = return_exceptions
        self.max_inputs = max_inputs
        self._view: ClusterView | None = view(self.client)  # one scheduler call; reused by the first placement
        self.resource, self.resources, self.declared, cluster_slots = resolve_target(self.client, gpu, self._view)
        self.slots = max(1, min(cluster_slots, max_workers or cluster_slots))
        self.window = _policy.window(self.slots)
        self.id = map_id or uuid.uuid4().hex[:12]
        if sync is None:  # c.BurstLab.environment = "sync" syncs maps too
            sync = getattr(getattr(workspace, "config", None), "environment", "") == "sync"
        self.env = MapEnv.make(self.id, env, secrets, sync)  # values stay here and on its workers (_env)
        try:
            self.total: int | None = len(items)  # type: ignore[arg-type]
        except TypeError:
            self.total = None
        self._source = iter(items)
        self._next_index = 0
        self._exhausted = False
        self._front: deque[Chunk] = deque()  # inputs a worker handed back unrun, or a changed checkpoint row's
        self._retry: list = []  # heap of (not before, seq, index, value, attempts)
        self._ready: deque = deque()  # batches reused from the checkpoint, to hand out
        self._inflight: dict[Any, Chunk] = {}
        self._inflight_inputs = 0
        self._done_q: queue.Queue = queue.Queue()
        self._per_item_s: float | None = None
        self._rate_n = 0  # inputs in the chunk that last set _per_item_s
        self._first_size: int | None = None  # inputs per first chunk (one per worker, before the first result)
        self._last_size = 1
        self._seq = itertools.count()
        self.done = self.failed = self.retried = self.reused = 0
        self.setup_s = 0.0
        self.failed_indices: set[int] = set()
        self.store: Checkpoint | None = None
        self._resume: Resume | None = None
        if checkpoint is not None:
            self.store = checkpoint if isinstance(checkpoint, Checkpoint) else \
                Checkpoint(checkpoint, function_digest(fn, self.fn_blob))
            resume = Resume(self.store)
            self._resume = resume if resume else None
            self.store.set_meta(id=self.id, name=self.name, state="running", total=self.total, pid=os.getpid(),
                                host=socket.gethostname())
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
        self._slot_cycle = None  # set by _placements()
        self._placed = -1e9
        self.started = time.monotonic()
        self.started_wall = time.time()
        self._first_result_at: float | None = None
        self._published = 0.0
        self._stop_reason = ""
        self.progress = Progress.make(progress, self.name, self.total)
        self._workers_up = 0
        self._workers_checked = 0.0
        self._starts_checked = 0.0
        self._closed = False
        self._first: Chunk | None = self._take()  # the first chunk is checked before anything starts
        if self._first is not None:
            self._first.blob = pickle_items(self._first.indices, self._first.values)
        if self._watcher is not None:
            self._watcher.track(self)

    # -- inputs ---------------------------------------------------------------------------------

    def _room(self) -> int:
        return self.max_inputs - self._inflight_inputs if self.max_inputs else 1 << 62

    def _take(self) -> Chunk | None:
        room = self._room()
        if room <= 0:
            return None
        if self._front:
            chunk = self._front[0]
            room = min(room, _policy.chunk_size(self._per_item_s, self._last_size, self.slots, len(chunk.indices)))
            if len(chunk.indices) <= room:
                return self._front.popleft()
            self._front[0] = Chunk(chunk.indices[room:], chunk.values[room:],
                                   chunk.attempts[room:] if chunk.attempts else None)
            return Chunk(chunk.indices[:room], chunk.values[:room], chunk.attempts[:room] if chunk.attempts else None)
        if self._retry and self._retry[0][0] <= time.monotonic():
            now, picked = time.monotonic(), []
            while self._retry and self._retry[0][0] <= now and len(picked) < min(self._last_size, room):
                picked.append(heapq.heappop(self._retry))
            return Chunk([p[2] for p in picked], [p[3] for p in picked], [p[4] for p in picked])
        while not self._exhausted:
            remaining = None if self.total is None else self.total - self._next_index
            if self._per_item_s is None:
                if self._first_size is None:
                    self._first_size = self._plan_first(remaining)
                size = min(room, self._first_size)
            else:
                size = min(room, _policy.chunk_size(self._per_item_s, self._last_size, self.slots, remaining))
            start = self._next_index
            values = list(itertools.islice(self._source, size))
            self._next_index += len(values)
            if len(values) < size:
                self._exhausted = True
            if values:
                self._last_size = len(values)
            chunk = self._screen(start, values) if self._resume is not None else \
                (Chunk(range(start, start + len(values)), values) if values else None)
            if chunk is not None:
                return chunk
        return self._front.popleft() if self._front else None

    def _plan_first(self, remaining: int | None) -> int:
        """The first chunks' size, from the pickled size of the next input (peeked, then put back)."""
        head = list(itertools.islice(self._source, 1))
        if not head:
            return 1
        self._source = itertools.chain(head, self._source)
        try:
            item_bytes = len(pickle.dumps(head[0], protocol=5))
        except Exception:  # noqa: BLE001 - cloudpickle's or the named error comes from pickle_items below
            return 1
        return _policy.first_chunk_size(remaining, self.slots, item_bytes)

    def _screen(self, start: int, values: list) -> Chunk | None:
        """Resume: drop the inputs whose results a matching checkpoint row holds (queued as ready batches)."""
        idx, vals = [], []
        for i, value in enumerate(values, start):
            got = self._resume.offer(i, value)
            if got is False:
                idx.append(i)
                vals.append(value)
            elif got is not True:
                reuse, payload = got
                if reuse:
                    self._ready.append((reuse, payload))
                else:  # the row's function or inputs changed: compute them again, and forget the row
                    self._front.append(Chunk([i for i, _ in payload], [v for _, v in payload]))
        if self._exhausted:
            left = self._resume.leftovers()
            if left:
                self._front.append(Chunk([i for i, _ in left], [v for _, v in left]))
        if not idx:
            return None
        if idx[-1] - idx[0] + 1 == len(idx):
            return Chunk(range(idx[0], idx[-1] + 1), vals)
        return Chunk(idx, vals)

    def _submit(self, chunk: Chunk) -> None:
        if chunk.blob is None:
            chunk.blob = pickle_items(chunk.indices, chunk.values)
        budget = (1e9 if len(chunk.indices) == 1 else
                  _policy.FIRST_BUDGET_S if self._per_item_s is None else _policy.CHUNK_BUDGET_S)
        future = self.client.submit(
            run_chunk, self.fn_blob, chunk.blob, self.mode, self.timeout, budget, self.env.key if self.env else "",
            key=self._key(next(self._seq)), pure=False,
            resources=self.resources if self._slot_cycle is None else {**self.resources, next(self._slot_cycle): 1},
        )
        self._inflight[future] = chunk
        self._inflight_inputs += len(chunk.indices)
        future.add_done_callback(self._done_q.put)

    def _key(self, seq) -> str:
        return f"burstlab-map-{self.name[:40]}-{self.id}-{seq}"

    def _placements(self) -> None:
        """Pin GPU chunks to GPUs no %%gpu session holds: Dask would queue a resource-restricted task
        behind a session's lease on a worker that merely *has* the resource, for the session's life."""
        now = time.monotonic()
        if now - self._placed < 1.0:  # sessions come and go at human speed: look again at most once a second
            return
        self._placed = now
        self._slot_cycle = None
        if self.resource == CPU or not self.resources:
            return
        cluster, self._view = self._view or view(self.client), None
        free = cluster.free(self.resource)
        if free and cluster.leased:  # only when a session holds one of this type; else let Dask balance
            self._slot_cycle = itertools.cycle(free)

    def _fill(self) -> None:
        if self._first is not None:
            self._placements()
            first, self._first = self._first, None
            self._submit(first)
        elif len(self._inflight) < self.window:
            self._placements()
        # Until the first result has timed the function: one chunk per worker if the first chunks hold many
        # inputs (each stops after FIRST_BUDGET_S, see _policy.first_chunk_size), else a single one-input probe.
        before = self.slots if (self._first_size or 1) > 1 else 1
        while len(self._inflight) < (self.window if self._per_item_s is not None else before):
            chunk = self._take()
            if chunk is None:
                return
            self._submit(chunk)

    # -- results --------------------------------------------------------------------------------

    def _pending(self) -> bool:
        return bool(self._inflight or self._retry or self._front or self._ready or self._first is not None
                    or not self._exhausted)

    def __iter__(self) -> Iterator[tuple[Any, list]]:
        try:
            self._fill()
            while self._pending():
                while self._ready:
                    indices, values = self._ready.popleft()
                    self.done += len(indices)
                    self.reused += len(indices)
                    yield indices, values
                if not (self._inflight or self._retry or self._front or not self._exhausted):
                    break
                wait = 0.25
                if self._retry and len(self._inflight) < self.window:
                    wait = max(0.0, min(wait, self._retry[0][0] - time.monotonic()))
                try:
                    ready = [self._done_q.get(timeout=wait)]
                except queue.Empty:
                    ready = []
                while True:
                    try:
                        ready.append(self._done_q.get_nowait())
                    except queue.Empty:
                        break
                ready = [f for f in ready if f in self._inflight]
                if ready:
                    yield from self._collect(ready)
                self._check_stop()
                if not ready:
                    self._check_workers()
                self._check_hosts()  # the only host of its kind lost: end with an error, not wait forever
                self._fill()
                self._tick()
        finally:
            self.close()

    def stop_for(self, exc: BaseException) -> None:
        """Stop this map from another thread (the budget watcher): its own thread cancels what is left
        and raises ``exc`` within a moment."""
        self._stop_error = exc
        self._done_q.put(None)  # wake the map's thread if it is waiting for a result

    def _check_stop(self) -> None:
        if self._stop_error is not None:
            self.cancel()
            raise self._stop_error
        if self._stop_reason:
            self.cancel()
            raise FanoutError(f"The map {self.name} ({self.id}) was cancelled: {self._stop_reason}. "
                              f"{self.done} of {self.total if self.total is not None else '?'} inputs had finished"
                              + (f"; their results are in {self.store.path} (rerun the same call to resume)."
                                 if self.store is not None else
                                 "; their results are in this error's .partial ({index: result}); pass "
                                 "checkpoint='runs/NAME' to keep them across runs and resume."))

    def _collect(self, futures: list) -> Iterator[tuple[Any, list]]:
        finished = [f for f in futures if f.status == "finished"]
        failed = [f for f in futures if f.status != "finished"]
        reports = self.client.gather(finished, errors="skip") if finished else []
        if len(reports) != len(finished):  # one was lost between done and gather: treat it as failed
            reports, failed = [], failed + finished
            finished = []
        for future, report in zip(finished, reports):
            chunk = self._inflight.pop(future)
            self._inflight_inputs -= len(chunk.indices)
            future.release()
            batch = self._chunk_results(chunk, report)
            if batch is not None:
                yield batch
        for future in failed:
            chunk = self._inflight.pop(future)
            self._inflight_inputs -= len(chunk.indices)
            reason = self._infra_reason(future)
            future.release()
            out_i, out_v = [], []
            for pos, index in enumerate(chunk.indices):
                attempts = (chunk.attempts[pos] if chunk.attempts else 0) + 1
                if self._again(index, chunk.values[pos], attempts, True, None):
                    continue
                err = FanoutError(
                    f"Input #{index} of {self.name} failed after {attempts} attempt"
                    f"{'s' if attempts != 1 else ''} ({reason}). Give it more with retries=N."
                )
                out_i.append(index)
                out_v.append(self._failure(index, err))
            if out_i:
                yield out_i, out_v

    def _again(self, index: int, value: Any, attempts: int, infrastructure: bool, exc) -> bool:
        """Queue the input for another attempt if the policy allows (after its backoff); True if queued."""
        if not _policy.should_retry(attempts, self.retries, infrastructure, exc, self.retry_on):
            return False
        self.retried += 1
        delay = self.backoff.delay(attempts) if self.backoff is not None else 0.0
        heapq.heappush(self._retry, (time.monotonic() + delay, next(self._seq), index, value, attempts))
        return True

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

    def _chunk_results(self, chunk: Chunk, report: tuple) -> tuple[Any, list] | None:
        worker, start_ns, stop_ns, ran, blob, errors, setup_s, setup_error, work_s = report
        if setup_error is not None and setup_error[0] == NEED_ENV and self.env is not None:
            self.env.prepare(self.client, setup_error[1])  # that worker had not got the map's environment yet
            again = Chunk(chunk.indices, chunk.values, chunk.attempts)
            again.blob = chunk.blob
            self._front.appendleft(again)
            return None
        self.metering.report(worker, start_ns, stop_ns)
        self.setup_s += setup_s
        if self._first_result_at is None:
            self._first_result_at = time.monotonic()
        indices, n = chunk.indices, len(chunk.indices)
        if setup_error is not None:
            exc = _rebuild(setup_error)
            out = [self._failure(i, exc, attempts=(chunk.attempts[p] if chunk.attempts else 0) + 1)
                   for p, i in enumerate(indices)]
            return list(indices), out
        values = cloudpickle.loads(blob) if ran else []
        if ran < n:  # the worker's time budget ran out: the rest goes first in the next chunk
            self._front.appendleft(Chunk(indices[ran:], chunk.values[ran:],
                                         chunk.attempts[ran:] if chunk.attempts else None))
            if ran:
                self._last_size = ran
        if ran:
            self._per_item_s = _policy.update_rate(self._per_item_s, work_s, ran,
                                                   old_count=self._rate_n)
            self._rate_n = ran
        if not errors:
            self.done += ran
            done_indices = indices if ran == n else indices[:ran]
            if self.store is not None and ran:
                digest = chunk_digest(self.store.fn_digest, chunk.blob if ran == n else dumps(chunk.values[:ran]))
                self.store.append(done_indices, digest, blob if ran == n else dumps(values))
            return (done_indices, values) if ran else None
        bad = dict(errors)
        keep_i, keep_v, keep_in = [], [], []
        for pos in range(ran):
            index = indices[pos]
            if pos not in bad:
                keep_i.append(index)
                keep_v.append(values[pos])
                keep_in.append(chunk.values[pos])
                continue
            attempts = (chunk.attempts[pos] if chunk.attempts else 0) + 1
            exc = _rebuild(bad[pos])
            if self._again(index, chunk.values[pos], attempts, False, exc):
                continue
            value = self._failure(index, exc, attempts=attempts)  # raises unless return_exceptions
            keep_i.append(index)
            keep_v.append(value)
        self.done += len(keep_in)
        if self.store is not None and keep_in:
            ok = [(i, v) for i, v in zip(keep_i, keep_v) if i not in self.failed_indices]
            self.store.append([i for i, _ in ok], chunk_digest(self.store.fn_digest, dumps(keep_in)),
                              dumps([v for _, v in ok]))
        return (keep_i, keep_v) if keep_i else None

    def _failure(self, index: int, exc: BaseException, attempts: int | None = None) -> Any:
        self.failed += 1
        self.failed_indices.add(index)
        if attempts is not None:
            _add_note(exc, f"(input #{index} of {self.name}: failed on attempt {attempts} "
                           f"of at most {self.retries + 1})")
        if not self.return_exceptions:
            raise exc
        return exc

    # -- the end ----------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel every input not finished; workers become idle (and stop after the idle window).

        A GPU worker still running a cancelled input after a short grace is restarted, so its GPU is
        free at once (a thread cannot be stopped; the process can). A GPU worker runs one task at a
        time, so nothing else (no session) is on it.
        """
        if self._inflight:  # what runs now is billed from when it started: look before cancelling it
            self.metering.poll(self.client, force=True)
        futures = list(self._inflight)
        self._cut_short = self._cut_short or bool(futures or self._retry or self._front or not self._exhausted)
        self._inflight.clear()
        self._inflight_inputs = 0
        self._retry.clear()
        self._front.clear()
        self._first = None
        self._exhausted = True
        if not futures:
            return
        keys = [f.key for f in futures]
        try:
            self.client.cancel(futures, force=True)
            if self.resource != CPU and not self._hosts_lost:  # lost hosts run nothing to stop
                time.sleep(0.3)
                self.client.run(_stop_if_executing, keys, on_error="ignore")
        except Exception:  # noqa: BLE001 - the cluster is out of reach: its tasks die with it, nothing to stop
            pass

    def close(self) -> None:
        """Cancel what is left, write the ledger rows, close the progress display (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.cancel()
        clean = not self._cut_short
        try:
            if self.env is not None:
                self.env.close(self.client)
            self.metering.close(clean, self.done + self.failed)
        finally:
            if self._watcher is not None:
                self._watcher.untrack(self)
            self._tick(final=True)


def _stop_if_executing(keys: list, dask_worker=None) -> bool:
    """Runs on each worker: if it still executes one of ``keys``, its process exits (its Nanny starts
    a fresh one). Only GPU workers are asked; they run one task at a time, so nothing else is lost."""
    import os

    tasks = dask_worker.state.tasks
    if any(k in tasks and tasks[k].state in ("executing", "long-running", "cancelled") for k in keys):
        from burstlab.remote_kernel.pool import remove_kernel_files

        remove_kernel_files()  # no kernel's connection file outlives this process
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


__all__ = ["Chunk", "MapRun", "describe", "pickle_function", "resolve_target"]
