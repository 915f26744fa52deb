"""The fan-out API: ``burstlab.map`` / ``starmap`` / ``for_each`` / ``spawn_map``, ``@burstlab.function``
and the verbs on a function object.

``Function.map`` returns a list in input order (``ordered=True``, alias ``order_outputs``) or an iterator
of results as they finish (``ordered=False``); ``remote`` runs one call and waits; ``spawn`` starts one
call and returns a :class:`Call`; ``spawn_map`` starts a whole map and returns a :class:`MapHandle` at
once. All of them check the function, the GPU spec and the first inputs before anything starts, and
share one engine (``_engine.MapRun``). ``checkpoint=`` makes a map resumable (``_checkpoint``).
"""

from __future__ import annotations

import functools
import threading
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from burstlab.errors import FanoutError

from ._checkpoint import Checkpoint, wait_for
from ._engine import MapRun
from ._policy import Retries
from ._runner import CALL, ONE, STAR


def _workspace(workspace=None):
    if workspace is not None:
        return workspace
    from burstlab._default import default_workspace  # handed down by burstlab.workspace: no upward import

    return default_workspace()


def _assemble(batches: list, total: int | None) -> list:
    """The results in input order from ``(indices, values)`` batches."""
    n = total if total is not None else 1 + max((max(i) for i, _ in batches if len(i)), default=-1)
    out: list = [None] * n
    for indices, values in batches:
        if isinstance(indices, range):
            out[indices.start:indices.stop] = values
        else:
            for i, v in zip(indices, values):
                out[i] = v
    return out


def _partial(batches: list) -> dict[int, Any]:
    return {i: v for indices, values in batches for i, v in zip(indices, values)}


class Call:
    """One call started with ``Function.spawn``: ``result()``, ``done()``, ``cancel()``."""

    def __init__(self, run: MapRun):
        self._run = run
        self._future: Future = Future()
        self._thread = threading.Thread(target=self._drive, name=f"burstlab-spawn-{run.name}", daemon=True)
        self._thread.start()

    def _drive(self) -> None:
        try:
            for indices, values in self._run:
                if indices[0] in self._run.failed_indices:
                    self._future.set_exception(values[0])
                else:
                    self._future.set_result(values[0])
                return
        except BaseException as exc:
            if not self._future.done():
                self._future.set_exception(exc)
        finally:
            if not self._future.done():
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


def _maps_dir(home: str | None = None) -> Path:
    if home is None:
        from burstlab.config import BurstLab

        home = BurstLab().home
    return Path(home) / "maps"


class MapHandle:
    """A map started with ``spawn_map``: ``id``, ``result()``, ``done()``, ``cancel()``, ``results()``.

    Its results go to its checkpoint store as they arrive (``checkpoint=`` or ``BURSTLAB_HOME/maps/<id>``),
    so ``MapHandle.from_id(id)`` collects them from another process of the same user, once the map ends.
    """

    def __init__(self, map_id: str, path: Path, run: MapRun | None = None):
        self.id = map_id
        self.path = path
        self._run = run
        self._error: BaseException | None = None
        self._finished = threading.Event()
        self._thread = None
        if run is not None:
            self._thread = threading.Thread(target=self._drive, name=f"burstlab-spawn-map-{map_id}", daemon=True)
            self._thread.start()

    @classmethod
    def from_id(cls, map_id: str, *, checkpoint: Any = None, home: str | None = None) -> "MapHandle":
        """A handle on a map spawned elsewhere (another notebook of the same user): by its id, or by the
        ``checkpoint=`` it was given."""
        path = Path(checkpoint) if checkpoint is not None else _maps_dir(home) / map_id
        return cls(map_id, path)

    def _drive(self) -> None:
        try:
            for _ in self._run:
                pass
        except BaseException as exc:
            self._error = exc
            try:
                self._run.store.set_meta(state="failed", error=f"{type(exc).__name__}: {exc}")
            except Exception:  # noqa: BLE001 - the summary row only; the error itself is raised to the caller
                pass
        finally:
            self._finished.set()

    def done(self) -> bool:
        if self._run is not None:
            return self._finished.is_set()
        store = Checkpoint(self.path, b"", readonly=True)
        try:
            return store.meta().get("state") in ("done", "failed", "cancelled")
        finally:
            store.close()

    def cancel(self) -> None:
        if self._run is None:
            raise FanoutError(f"The map {self.id} runs in another process; cancel it there or from the lab's panel.")
        self._run._stop_reason = "cancelled with MapHandle.cancel()"
        self._run._done_q.put(None)

    def results(self, timeout: float | None = None) -> Iterator[Any]:
        """An iterator over the results in input order, read from the store (waits for the end)."""
        meta = self._wait(timeout)
        store = Checkpoint(self.path, b"", readonly=True)
        total = int(meta["total"]) if meta.get("total") not in (None, "None") else None
        try:
            for _, value in store.iterate(limit=total):
                yield value
        finally:
            store.close()

    def _wait(self, timeout: float | None) -> dict[str, str]:
        if self._run is not None:
            if not self._finished.wait(timeout):
                raise TimeoutError(f"The map {self.id} has not finished after {timeout:g} s.")
            if self._error is not None:
                raise self._error
        store = Checkpoint(self.path, b"", readonly=True)
        try:
            meta = wait_for(store, timeout)
        finally:
            store.close()
        if meta.get("state") != "done":
            raise FanoutError(f"The map {self.id} ended {meta.get('state')}: {meta.get('error', '')}; "
                              f"{meta.get('done')} results are in {self.path} (rerun with checkpoint= to resume).")
        return meta

    def result(self, timeout: float | None = None) -> list:
        """Every result, in input order (waits for the end; raises if the map failed or was cancelled)."""
        return list(self.results(timeout))

    def __repr__(self) -> str:
        return f"<burstlab.MapHandle {self.id} {'done' if self._finished.is_set() else 'running'}>"


class Function:
    """A function that runs on the workspace's workers: ``f.remote(x)``, ``f.map(xs)``, ``f.spawn(x)``.

    Calling it directly (``f(x)``) runs it here, as if it were not decorated.
    """

    def __init__(self, fn: Callable, *, gpu: Any = None, retries: Any = 0, retry_on: tuple = (),
                 timeout: float | None = None, max_workers: int | None = None, workspace=None,
                 env: dict | None = None, secrets: Iterable[str] | None = None, sync: bool | None = None):
        self.fn = fn
        self.env = env
        self.secrets = secrets
        self.sync = sync
        self.gpu = gpu
        self.retries = retries
        self.retry_on = retry_on
        self.timeout = timeout
        self.max_workers = max_workers
        self.workspace = workspace
        try:
            functools.update_wrapper(self, fn)
        except AttributeError:
            pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def _run(self, items: Iterable[Any], *, mode: int, progress: Any, max_workers: int | None = None,
             return_exceptions: bool = False, max_inputs: int | None = None, checkpoint: Any = None,
             map_id: str | None = None) -> MapRun:
        return MapRun(
            _workspace(self.workspace), self.fn, items, gpu=self.gpu, retries=self.retries, retry_on=self.retry_on,
            timeout=self.timeout, max_workers=max_workers or self.max_workers, return_exceptions=return_exceptions,
            progress=progress, mode=mode, max_inputs=max_inputs, checkpoint=checkpoint, map_id=map_id,
            env=self.env, secrets=self.secrets, sync=self.sync,
        )

    def map(self, items: Iterable[Any], *, ordered: bool = True, order_outputs: bool | None = None,
            return_exceptions: bool = False, progress: Any = None, max_workers: int | None = None,
            max_inputs: int | None = None, checkpoint: Any = None, keep_results: bool = True,
            _mode: int = ONE) -> list | Iterator:
        """Run the function once per input (``fn(item)``).

        ``ordered=True`` (or ``order_outputs=True``): a list, in input order. ``ordered=False``: an
        iterator yielding results as they finish. Inputs are read lazily, a bounded window at a time, so
        a generator of millions is fine; ``max_inputs`` caps the inputs in flight at once. A failed input
        raises its exception (with the remote traceback) and cancels the rest, unless
        ``return_exceptions=True`` puts exceptions in place of results. Any exception out of the map
        (a failed input, Ctrl-C, a cancel, a budget stop) carries ``.partial``: ``{index: result}`` of
        the inputs that had finished. ``checkpoint="runs/eval-7"``: results are appended to a local store
        as they arrive, and rerunning the same call computes only what is missing. ``keep_results=False``
        (with a checkpoint) keeps nothing in memory and returns an iterator over the store, in input
        order. ``progress``: None shows it (a widget in a notebook, one line in a terminal), False hides
        it, a stream writes there.
        """
        if order_outputs is not None:
            ordered = order_outputs
        if not keep_results and checkpoint is None:
            raise FanoutError("keep_results=False streams the results to the checkpoint store: pass checkpoint=.")
        run = self._run(items, mode=_mode, progress=progress, max_workers=max_workers,
                        return_exceptions=return_exceptions, max_inputs=max_inputs, checkpoint=checkpoint)
        if not keep_results:
            for _ in run:
                pass
            limit = run._next_index
            return (value for _, value in run.store.iterate(limit=limit))
        if not ordered:
            return (value for _, values in run for value in values)
        batches: list = []
        try:
            for batch in run:
                batches.append(batch)
        except BaseException as exc:
            run.close()
            try:
                exc.partial = _partial(batches)  # type: ignore[attr-defined]
            except Exception:
                pass
            raise
        return _assemble(batches, run._next_index)

    def starmap(self, items: Iterable[Iterable[Any]], **options: Any) -> list | Iterator:
        """``fn(*args)`` for each tuple of arguments; options as ``map``."""
        return self.map(items, _mode=STAR, **options)

    def for_each(self, items: Iterable[Any], **options: Any) -> None:
        """``fn(item)`` for each input, keeping no results (errors still raise); options as ``map``."""
        for _ in self.map(items, ordered=False, **options):
            pass

    def spawn_map(self, items: Iterable[Any], *, checkpoint: Any = None, return_exceptions: bool = False,
                  max_workers: int | None = None, max_inputs: int | None = None, star: bool = False) -> MapHandle:
        """Start the map and return a :class:`MapHandle` at once; results go to ``checkpoint`` (default
        ``BURSTLAB_HOME/maps/<id>``), where ``handle.result()`` or ``MapHandle.from_id(id)`` collect them."""
        ws = _workspace(self.workspace)
        map_id = uuid.uuid4().hex[:12]
        path = Path(checkpoint) if checkpoint is not None else _maps_dir(ws.config.home) / map_id
        run = self._run(items, mode=STAR if star else ONE, progress=False, max_workers=max_workers,
                        return_exceptions=return_exceptions, max_inputs=max_inputs, checkpoint=path, map_id=map_id)
        return MapHandle(map_id, path, run)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run one call on a worker and return its result."""
        return self.spawn(*args, **kwargs).result()

    def spawn(self, *args: Any, **kwargs: Any) -> Call:
        """Start one call on a worker; returns a :class:`Call` at once."""
        return Call(self._run([(args, kwargs)], mode=CALL, progress=False, return_exceptions=True))

    def __repr__(self) -> str:
        return f"<burstlab.Function {getattr(self.fn, '__qualname__', self.fn)!r} gpu={self.gpu!r}>"


def function(fn: Callable | None = None, *, gpu: Any = None, retries: Any = 0, retry_on: tuple = (),
             timeout: float | None = None, max_workers: int | None = None, workspace=None,
             env: dict | None = None, secrets: Iterable[str] | None = None, sync: bool | None = None):
    """Decorator: ``@burstlab.function(gpu="H100", retries=2, timeout=600)`` (or bare ``@burstlab.function``).

    ``gpu``: a spec as ``%%gpu`` takes it (``"H100"``, ``["H100", "A100"]``: the first type with a GPU no
    session holds), or None for CPU workers. ``retries``: extra attempts per input after an
    infrastructure failure (a worker died or was lost); the function's own exceptions are retried only if
    ``retry_on`` names their type. ``retries=burstlab.Retries(3, backoff=2.0, initial=1.0)`` waits
    1, 2, 4 s between attempts and retries any ``Exception``. ``timeout``: seconds one input may run (it
    then fails with TimeoutError). ``max_workers``: most workers at once. ``env={"WANDB_MODE": "offline"}``,
    ``secrets=["OPENAI_API_KEY"]`` (read here, from the environment or ``BURSTLAB_HOME/secrets.env``) and
    ``sync=True`` (ship the notebook's pure packages and modules; default: ``c.BurstLab.environment == "sync"``)
    apply to this function's tasks only (docs/environment.md).
    """
    def wrap(f: Callable) -> Function:
        return Function(f, gpu=gpu, retries=retries, retry_on=retry_on, timeout=timeout, max_workers=max_workers,
                        workspace=workspace, env=env, secrets=secrets, sync=sync)

    return wrap(fn) if fn is not None else wrap


def _function_of(fn: Callable, gpu, retries, retry_on, timeout, max_workers, workspace, env=None, secrets=None,
                 sync=False) -> Function:
    return Function(fn, gpu=gpu, retries=retries, retry_on=retry_on, timeout=timeout, max_workers=max_workers,
                    workspace=workspace, env=env, secrets=secrets, sync=sync)


def map(fn: Callable, items: Iterable[Any], *, gpu: Any = None, max_workers: int | None = None, retries: Any = 0,
        retry_on: tuple = (), timeout: float | None = None, ordered: bool = True, order_outputs: bool | None = None,
        return_exceptions: bool = False, progress: Any = None, max_inputs: int | None = None, checkpoint: Any = None,
        keep_results: bool = True, workspace=None, env: dict | None = None, secrets: Iterable[str] | None = None,
        sync: bool | None = None) -> list | Iterator:
    """``fn`` over ``items`` on the workspace's workers, in one call: ``Function(fn, ...).map(items)``.
    ``env``, ``secrets`` and ``sync`` as ``@burstlab.function`` takes them."""
    return _function_of(fn, gpu, retries, retry_on, timeout, max_workers, workspace, env, secrets, sync).map(
        items, ordered=ordered, order_outputs=order_outputs, return_exceptions=return_exceptions, progress=progress,
        max_inputs=max_inputs, checkpoint=checkpoint, keep_results=keep_results)


def starmap(fn: Callable, items: Iterable[Iterable[Any]], *, gpu: Any = None, max_workers: int | None = None,
            retries: Any = 0, retry_on: tuple = (), timeout: float | None = None, workspace=None,
            env: dict | None = None, secrets: Iterable[str] | None = None, sync: bool | None = None,
            **options: Any) -> list | Iterator:
    """``fn(*args)`` for each tuple in ``items``; options as ``burstlab.map``."""
    return _function_of(fn, gpu, retries, retry_on, timeout, max_workers, workspace, env, secrets,
                        sync).starmap(items, **options)


def for_each(fn: Callable, items: Iterable[Any], *, gpu: Any = None, max_workers: int | None = None,
             retries: Any = 0, retry_on: tuple = (), timeout: float | None = None, workspace=None,
             env: dict | None = None, secrets: Iterable[str] | None = None, sync: bool | None = None,
             **options: Any) -> None:
    """``fn(item)`` for each input, keeping no results; options as ``burstlab.map``."""
    _function_of(fn, gpu, retries, retry_on, timeout, max_workers, workspace, env, secrets, sync).for_each(
        items, **options)


def spawn_map(fn: Callable, items: Iterable[Any], *, gpu: Any = None, max_workers: int | None = None,
              retries: Any = 0, retry_on: tuple = (), timeout: float | None = None, workspace=None,
              env: dict | None = None, secrets: Iterable[str] | None = None, sync: bool | None = None,
              **options: Any) -> MapHandle:
    """Start ``fn`` over ``items`` and return a :class:`MapHandle` at once (see ``Function.spawn_map``)."""
    return _function_of(fn, gpu, retries, retry_on, timeout, max_workers, workspace, env, secrets,
                        sync).spawn_map(items, **options)


__all__ = ["Call", "Function", "MapHandle", "Retries", "for_each", "function", "map", "spawn_map", "starmap"]
