"""Per-worker state: ``@burstlab.cls(gpu="H100")`` classes whose ``@burstlab.enter`` methods run once per
worker process (load the model there) and whose ``@burstlab.exit`` methods run when the worker retires.

``Model(*args)`` makes a handle (nothing runs here); ``Model(*args).predict`` is a :class:`Function`
(``.remote``, ``.map``, ``.spawn``, ``.starmap``, ``.for_each``, ``.spawn_map``). On a worker, the first
call of any method of a (class, arguments) pair builds the instance and runs its ``enter`` methods; the
seconds they take travel back with the chunk, show in the progress line and are billed to the map (the
worker's interval covers them). The instance lives until the worker process ends; its ``exit`` methods
run as Dask closes the worker (a worker plugin's teardown).
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import cloudpickle

_ENTER = "_burstlab_enter"
_EXIT = "_burstlab_exit"


def enter(fn):
    """Mark a method of a ``@burstlab.cls`` class to run once per worker process, before its first call."""
    setattr(fn, _ENTER, True)
    return fn


def exit(fn):  # noqa: A001 - the public name is burstlab.exit, as in the decorator's pair
    """Mark a method of a ``@burstlab.cls`` class to run when the worker process retires."""
    setattr(fn, _EXIT, True)
    return fn


def _marked(cls: type, flag: str) -> list[str]:
    names = []
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if getattr(value, flag, False) and name not in names:
                names.append(name)
    return names


# -- on the worker --------------------------------------------------------------------------------

_instances: dict[str, Any] = {}
_instances_lock = threading.Lock()


class _ExitPlugin:
    """Inserted in the worker's plugins: Dask calls ``teardown`` as the worker closes."""

    def __init__(self, obj: Any, names: list[str]):
        self.obj = obj
        self.names = names

    def teardown(self, worker=None) -> None:
        for name in self.names:
            getattr(self.obj, name)()


_exits: list[_ExitPlugin] = []


def _run_exits() -> None:
    while _exits:
        plugin = _exits.pop()
        try:
            plugin.teardown()
        except Exception:  # one failing exit must not keep the others from running
            import traceback

            traceback.print_exc()


def _on_retire(plugin: _ExitPlugin) -> None:
    """Run ``plugin.teardown`` when this worker starts closing (its Nanny retiring it, or the scheduler), or at
    the process's exit: Dask runs plugin teardowns late in ``Worker.close``, after waits a retiring
    worker's Nanny does not always allow for, so the exits run first thing instead."""
    import atexit

    _exits.append(plugin)
    if len(_exits) > 1:
        return
    atexit.register(_run_exits)
    try:
        from distributed import get_worker

        worker = get_worker()
    except ValueError:  # not on a Dask worker (called here): at interpreter exit only
        return
    close = worker.close

    async def close_after_exits(*args, **kwargs):
        _run_exits()  # on the worker's event loop: it is closing, nothing else needs it meanwhile
        return await close(*args, **kwargs)

    worker.close = close_after_exits
    for handlers in (worker.handlers, worker.stream_handlers):
        if handlers.get("close") == close:
            handlers["close"] = close_after_exits


def _instance(identity: str, cls: type, args: tuple, kwargs: dict) -> Any:
    obj = _instances.get(identity)
    if obj is not None:
        return obj
    with _instances_lock:  # one build per process even with several threads
        obj = _instances.get(identity)
        if obj is not None:
            return obj
        from ._runner import setup_clock

        t0 = time.perf_counter()
        try:
            obj = cls(*args, **kwargs)
            for name in _marked(cls, _ENTER):
                getattr(obj, name)()
        finally:
            setup_clock.seconds += time.perf_counter() - t0
        exits = _marked(cls, _EXIT)
        if exits:
            _on_retire(_ExitPlugin(obj, exits))
        _instances[identity] = obj
        return obj


class _Method:
    """What travels to the workers for ``Model(...).method``: the class, its arguments and the name."""

    def __init__(self, identity: str, cls: type, args: tuple, kwargs: dict, name: str):
        self.identity = identity
        self.cls = cls
        self.args = args
        self.kwargs = kwargs
        self.name = name
        self.__qualname__ = f"{cls.__qualname__}.{name}"
        self._burstlab_identity = identity.encode() + name.encode()  # checkpoints key on this, not the pickle

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(_instance(self.identity, self.cls, self.args, self.kwargs), self.name)(*args, **kwargs)


# -- here -----------------------------------------------------------------------------------------

def _identity(cls: type, args: tuple, kwargs: dict) -> str:
    """The same class and arguments give the same instance on a worker (and the same checkpoint key)."""
    import marshal

    h = hashlib.blake2b(digest_size=12)
    h.update(f"{cls.__module__}.{cls.__qualname__}".encode())
    for klass in cls.__mro__:
        for name, value in sorted(vars(klass).items()):
            code = getattr(value, "__code__", None)
            if code is not None:
                h.update(name.encode() + marshal.dumps(code))
    try:
        h.update(cloudpickle.dumps((args, sorted(kwargs.items()))))
    except Exception as exc:
        from burstlab.errors import FanoutError

        raise FanoutError(f"The arguments of {cls.__qualname__}(...) cannot be sent to the workers: {exc}. "
                          "Pass picklable arguments (paths, names, numbers).") from exc
    return h.hexdigest()


class Instance:
    """``Model(*args)``: attribute access gives each method as a :class:`Function` on the class's workers."""

    def __init__(self, owner: "Cls", args: tuple, kwargs: dict):
        self._owner = owner
        self._args = args
        self._kwargs = kwargs
        self._identity = _identity(owner.cls, args, kwargs)

    def __getattr__(self, name: str):
        if name.startswith("_") or not callable(getattr(self._owner.cls, name, None)):
            raise AttributeError(f"{self._owner.cls.__qualname__} has no method {name!r}")
        from .api import Function

        method = _Method(self._identity, self._owner.cls, self._args, self._kwargs, name)
        return Function(method, **self._owner.options)

    def __repr__(self) -> str:
        return f"<burstlab.cls {self._owner.cls.__qualname__} instance gpu={self._owner.options.get('gpu')!r}>"


class Cls:
    """A class decorated with ``@burstlab.cls``; call it as the class to get an :class:`Instance`."""

    def __init__(self, cls: type, options: dict):
        self.cls = cls
        self.options = options
        self.__doc__ = cls.__doc__
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__

    def __call__(self, *args: Any, **kwargs: Any) -> Instance:
        return Instance(self, args, kwargs)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """An ordinary instance here, its ``enter`` methods run (for trying it out without workers)."""
        obj = self.cls(*args, **kwargs)
        for name in _marked(self.cls, _ENTER):
            getattr(obj, name)()
        return obj

    def __repr__(self) -> str:
        return f"<burstlab.cls {self.cls.__qualname__} gpu={self.options.get('gpu')!r}>"


def cls(klass: type | None = None, *, gpu: Any = None, retries: Any = 0, retry_on: tuple = (),
        timeout: float | None = None, max_workers: int | None = None, workspace=None, env: dict | None = None,
        secrets: Any = None, sync: bool | None = None):
    """Decorator: ``@burstlab.cls(gpu="H100")`` on a class with ``@burstlab.enter`` / ``@burstlab.exit``
    methods. Options are those of ``@burstlab.function`` (``env``/``secrets`` apply to ``@enter`` too: it runs
    inside its map's first chunk on each worker)."""
    options = {"gpu": gpu, "retries": retries, "retry_on": retry_on, "timeout": timeout,
               "max_workers": max_workers, "workspace": workspace, "env": env, "secrets": secrets, "sync": sync}

    def wrap(k: type) -> Cls:
        if not isinstance(k, type):
            raise TypeError(f"@burstlab.cls decorates a class, not {k!r}; use @burstlab.function for a function.")
        return Cls(k, options)

    return wrap(klass) if klass is not None else wrap


__all__ = ["Cls", "Instance", "cls", "enter", "exit"]
