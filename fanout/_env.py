"""A map's environment variables, secrets and synced packages, on the workers that run its chunks.

``burstlab.map(fn, xs, env={...}, secrets=[...], sync=True)``. Three rules shape this module:

- **Values never enter the task graph.** A chunk task carries only the map's id. The values reach a worker
  through :func:`install`, which the map's own thread runs there with ``Client.run`` (a message the
  scheduler passes on and does not keep) the first time one of its chunks lands on that worker: the chunk
  finds no environment for its map, hands its inputs back unrun with ``("env", worker address)``, and the
  engine installs it there and sends the inputs again. The map's end (:func:`forget`) removes them from
  every worker.
- **Values apply only to that map's tasks.** ``os.environ`` and ``sys.path`` are per process, and a worker
  process runs tasks of several maps. Every chunk passes the worker's :class:`Gate` with its map's key
  (``""`` for a map without environment): chunks of one map run side by side, chunks of different maps
  never overlap in one process. The first chunk in sets the variables (and puts the map's overlay first on
  ``sys.path``); the last one out restores what was there. While they are set, kernels the worker starts
  for sessions inherit the worker's own environment, not the map's (``secrets.base_environ``). A chunk
  that waits :data:`GATE_WAIT_S` for another map's chunks hands its inputs back unrun (the engine sends
  them again, maybe to another worker): no wait without an end.
- **Secrets never come back.** On the worker, each secret's value is replaced by ``[redacted]`` in error
  messages and remote tracebacks, and in results that are strings (or lists, tuples, dicts of them); a
  result that still holds a secret's value in another shape fails its input, naming the secret.

Sync ships the same wheels as a session's (``remote_kernel/envsync.py``), compared per host, into the same
per-environment overlay under the host's ``BURSTLAB_HOME``: only wheels its cache lacks travel.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field

from burstlab.errors import ConfigError, FanoutError
from burstlab import secrets
from burstlab.remote_kernel import envsync

log = logging.getLogger("burstlab.fanout")

GATE_WAIT_S = 5.0  # a chunk waits this long for another map's chunks to leave its worker, then goes back
RUN_TIMEOUT_S = 30.0  # one question to a worker (Client.run has no deadline of its own)
INSTALL_TIMEOUT_S = 120.0  # unpacking wheels on a worker
NEED_ENV = "env"  # the setup-error tag of a chunk whose worker lacks its map's environment


# -- the notebook's side -------------------------------------------------------------------------------------


@dataclass
class MapEnv:
    """What a map asks its workers to have: variables, secrets (values kept here and on its workers only)
    and, with ``sync``, the notebook's packages."""

    key: str
    values: dict[str, str] = field(repr=False)
    secret_names: tuple[str, ...] = ()
    sync: bool = False
    notebook_dir: str | None = None
    prepared: set = field(default_factory=set)  # worker addresses that have it
    tries: dict = field(default_factory=dict)  # worker address -> installs asked there
    report: str = ""
    shipped_bytes: int = 0  # wheels sent to workers' hosts (0 when their caches had them)
    last_error: str = ""

    @classmethod
    def make(cls, key: str, env=None, secret_names=None, sync: bool = False,
             notebook_dir: str | None = None) -> "MapEnv | None":
        values, secret_values = secrets.split(env, secret_names)
        if not (values or secret_values or sync):
            return None
        return cls(key, {**values, **secret_values}, tuple(sorted(secret_values)), bool(sync), notebook_dir)

    def __repr__(self) -> str:  # names only, never values
        return f"<MapEnv {self.key} env={sorted(self.values)} secrets={list(self.secret_names)} sync={self.sync}>"

    def prepare(self, client, address: str) -> None:
        """Install this map's environment on the worker at ``address`` (blocking; the map's thread). Chunks sent
        there before it had it answer too: when it has it now, nothing is done."""
        if address in self.prepared:
            try:
                if client.run(has, self.key, workers=[address], callback_timeout=RUN_TIMEOUT_S).get(address):
                    return
            except Exception:  # noqa: BLE001 - the worker is gone: installing below fails the same way, and says so
                pass
            self.prepared.discard(address)  # it lost it (its process restarted at the same address)
        tries = self.tries[address] = self.tries.get(address, 0) + 1
        if tries > 3:
            raise FanoutError(f"The map's environment could not be installed on the worker {address} "
                              f"({tries - 1} tries; last: {self.last_error or 'it did not stay there'}). "
                              "Look at the worker's log.")
        wheels, order, env_hash = {}, [], ""
        try:
            if self.sync:
                wheels, order, env_hash = self._wheels(client, address)
                self.shipped_bytes += sum(len(d) for d in wheels.values())
            client.run(install, self.key, self.values, self.secret_names, wheels, order, env_hash,
                       workers=[address], callback_timeout=INSTALL_TIMEOUT_S)
        except (ConfigError, FanoutError):
            raise
        except Exception as exc:  # noqa: BLE001 - the worker went away (its chunk goes elsewhere) or refused: asked
            hide = secrets.Redactor(self.values[n] for n in self.secret_names)
            self.last_error = hide.redact(f"{type(exc).__name__}: {exc}")[:300]  # again, up to 3 times, then the error says why
            log.info("could not install a map's environment on %s: %s", address, self.last_error)
            return
        self.prepared.add(address)

    def _wheels(self, client, address: str) -> tuple[dict, list, str]:
        here = envsync.imported_distributions()
        local = envsync.build_local_wheel(envsync.local_modules(self.notebook_dir or os.getcwd()))
        there = client.run(envsync.host_versions, sorted(here), workers=[address],
                           callback_timeout=RUN_TIMEOUT_S)[address]
        mismatches = envsync.compare(here, there)
        self.report = envsync.report(mismatches, host=address)
        if any(not m.shippable for m in mismatches):
            log.warning("%s", self.report)
        wheels = [envsync.build_wheel(here[m.name]) for m in mismatches if m.shippable]
        if local is not None:
            wheels.append(local)
        if not wheels:
            return {}, [], ""
        need = set(client.run(envsync.missing, [w.sha256 for w in wheels], workers=[address],
                              callback_timeout=RUN_TIMEOUT_S)[address])
        return ({w.sha256: w.data for w in wheels if w.sha256 in need}, [w.sha256 for w in wheels],
                envsync.environment_hash(here, wheels))

    def close(self, client) -> None:
        """Remove the values from every worker that got them (best effort: a worker gone took them along)."""
        if not self.prepared:
            return
        try:
            client.run(forget, self.key, workers=sorted(self.prepared), on_error="ignore",
                       callback_timeout=RUN_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the cluster is out of reach: its workers' memory goes with it
            log.info("could not remove a map's environment from its workers: %s", exc)
        self.prepared.clear()


# -- the worker's side ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Installed:
    values: dict = field(repr=False)
    redactor: secrets.Redactor = field(repr=False)
    secret_names: tuple = ()
    overlay: str | None = None


_installed: dict[str, _Installed] = {}  # map key -> what its chunks need, in this worker process


def install(key: str, values: dict, secret_names: tuple, wheels: dict, order: list, env_hash: str) -> bool:
    """On a worker (through ``Client.run``): keep a map's values, and unpack its wheels into its overlay."""
    overlay = envsync.install(wheels, order, env_hash) if order else None
    _installed[key] = _Installed(dict(values), secrets.Redactor(values[n] for n in secret_names),
                                 tuple(secret_names), overlay)
    return True


def forget(key: str) -> bool:
    _installed.pop(key, None)
    return True


def installed(key: str) -> _Installed | None:
    """(On a worker.) The map's environment here, or None."""
    return _installed.get(key)


def has(key: str) -> bool:
    """(On a worker, through ``Client.run``.) Whether the map's environment is here: never the values."""
    return key in _installed


class Gate:
    """Chunks of one map at a time in this process (any number of them side by side)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._key: str | None = None  # the map whose chunks run now; None: none runs
        self._inside = 0
        self._waiting: dict[str, int] = {}  # other maps' chunks waiting: new ones of the running map wait too
        self._overlay: str | None = None  # on sys.path (left there between chunks of the same map)

    def enter(self, key: str, env: _Installed | None, wait_s: float = GATE_WAIT_S) -> bool:
        """Let a chunk of map ``key`` in (setting its environment if it is the first); False after ``wait_s``."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            self._waiting[key] = self._waiting.get(key, 0) + 1
            try:
                while not (self._inside == 0 or (self._key == key and not self._others_wait(key))):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
            finally:
                self._waiting[key] -= 1
                if not self._waiting[key]:
                    del self._waiting[key]
            if self._inside == 0:
                self._key = key
                self._apply(env)
            self._inside += 1
            return True

    def _others_wait(self, key: str) -> bool:
        return any(k != key for k in self._waiting)

    def leave(self) -> None:
        with self._cond:
            self._inside -= 1
            if self._inside == 0:
                self._restore()
                self._key = None
                self._cond.notify_all()

    def _apply(self, env: _Installed | None) -> None:
        overlay = env.overlay if env is not None else None
        if overlay != self._overlay:
            self._drop_overlay()
            if overlay:
                sys.path.insert(0, overlay)
                importlib.invalidate_caches()
                self._overlay = overlay
        if env is not None:
            for name, value in env.values.items():
                if name not in secrets.applied:
                    secrets.applied[name] = os.environ.get(name)
                os.environ[name] = value

    def _restore(self) -> None:
        for name, before in list(secrets.applied.items()):
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before
            del secrets.applied[name]

    def _drop_overlay(self) -> None:
        """Take the last map's overlay off ``sys.path`` and forget the modules imported from it."""
        if not self._overlay:
            return
        root = self._overlay + os.sep
        try:
            sys.path.remove(self._overlay)
        except ValueError:
            pass
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None) or ""
            if path.startswith(root):
                del sys.modules[name]
        importlib.invalidate_caches()
        self._overlay = None


gate = Gate()


def redact_errors(redactor: secrets.Redactor, errors: list) -> list:
    """Packed errors (``pack_error``) with secrets' values replaced; an exception object that holds one
    travels as its type name and redacted message only."""
    out = []
    for pos, (tag, blob, type_name, message, text) in errors:
        if blob is not None and redactor.found_in(blob):
            blob = _redacted_exception(redactor, blob)
        out.append((pos, (tag, blob, type_name, redactor.redact(message), redactor.redact(text))))
    return out


def _redacted_exception(redactor: secrets.Redactor, blob: bytes) -> bytes | None:
    """The pickled exception again, of the same type with its string arguments redacted; None if that still
    holds a secret (it then travels as its type name and redacted message)."""
    import cloudpickle

    try:
        exc = cloudpickle.loads(blob)
        again = type(exc)(*(redact_value(redactor, a) for a in exc.args))
        again.__cause__ = again.__context__ = None
        data = cloudpickle.dumps(again)
    except Exception:  # noqa: BLE001 - an exception that cannot be rebuilt travels as its name and message
        return None
    return None if redactor.found_in(data) else data


def redact_value(redactor: secrets.Redactor, value):
    """Strings, and lists, tuples and dicts of them, with secrets' values replaced."""
    if isinstance(value, str):
        return redactor.redact(value)
    if isinstance(value, (list, tuple)):
        items = [redact_value(redactor, v) for v in value]
        if type(value) is list:
            return items
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, dict):
        return {redact_value(redactor, k): redact_value(redactor, v) for k, v in value.items()}
    return value


__all__ = ["GATE_WAIT_S", "NEED_ENV", "Gate", "MapEnv", "forget", "gate", "has", "install", "installed",
           "redact_errors", "redact_value"]
