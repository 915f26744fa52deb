"""Make a new session's kernel ready for the notebook's code, before its first cell runs.

:func:`prepare` uses only the session's public verbs (``push_sync``, ``execute_sync``, ``pull_sync``): values
travel over the kernel's variables channel, never in a cell's source, so secrets never enter the kernel's
history. In order:

1. ``env`` and ``secrets`` are set in the kernel's ``os.environ``, and the session keeps a
   :class:`~burstlab.remote_kernel.secrets.Redactor` for the secrets' values.
2. The distributions the notebook imported are compared with the host's, once per host and environment (the
   result is cached in this process by host and environment hash). ``strict`` refuses to start on any
   difference; otherwise the table is returned for the caller to show before the cell's output.
3. With ``sync``, what differs and can be shipped (pure Python, editable, the ``.py`` modules beside the
   notebook) is sent, only the wheels the host's cache lacks, and unpacked into an overlay that the kernel puts
   first on ``sys.path``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from burstlab.errors import ConfigError

from . import envsync
from .secrets import Redactor, check_env, resolve

_checked: dict[tuple[str, str], "Prepared"] = {}  # (host, environment hash) -> what the check found
_checked_lock = threading.Lock()


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` did: the mismatch table (empty when none), and what it shipped."""

    report: str = ""
    shipped_bytes: int = 0
    shipped: tuple[str, ...] = ()
    overlay: str = ""


def _remote(session, code: str, names: list[str]) -> dict:
    ex = session.execute_sync(code)
    if ex.error is not None:
        raise ConfigError(f"Preparing the {session.label} session on {session.host} failed: "
                          f"{ex.error.ename}: {ex.error.evalue}")
    return session.pull_sync(names) if names else {}


def prepare(session, *, env=None, secrets=None, sync: bool = False, strict: bool = False,
            notebook_dir: str | None = None, check: bool = True) -> Prepared:
    """Prepare ``session``'s fresh kernel (see the module's docstring). Raises ConfigError in ``strict`` mode
    when the host's environment differs, naming every difference."""
    values = check_env(env)
    secret_values = resolve(secrets)
    overlap = set(values) & set(secret_values)
    if overlap:
        raise ConfigError(f"{', '.join(sorted(overlap))} is both in env= and secrets=: name it once.")
    if values or secret_values:
        session.push_sync({"__burstlab_env": {**values, **secret_values}})
        _remote(session, "import os as __o; __o.environ.update(__burstlab_env); del __o, __burstlab_env", [])
    session.redactor = Redactor(secret_values.values())
    if not (check or sync or strict):
        return Prepared()

    here = envsync.imported_distributions()  # cached: a notebook that imported nothing new pays ~0.2 ms
    local_wheel = envsync.build_local_wheel(envsync.local_modules(notebook_dir or os.getcwd())) if sync else None
    env_hash = envsync.environment_hash(here, [local_wheel] if local_wheel else [])
    with _checked_lock:
        cached = _checked.get((session.host, env_hash))
    if cached is not None and not sync:
        if strict and cached.report:
            raise ConfigError(f"The environment on {session.host} differs from this notebook's:\n{cached.report}")
        return cached

    session.push_sync({"__burstlab_names": sorted(here)})
    there = _remote(session, "from burstlab.remote_kernel.envsync import host_versions as __hv\n"
                             "__burstlab_there = __hv(__burstlab_names)\ndel __hv, __burstlab_names",
                    ["__burstlab_there"])["__burstlab_there"]
    mismatches = envsync.compare(here, there)
    text = envsync.report(mismatches, host=session.host)
    if strict and mismatches:
        raise ConfigError(f"The environment on {session.host} differs from this notebook's (strict mode):\n{text}")
    result = Prepared(report=text)
    if sync:
        wheels = [envsync.build_wheel(here[m.name]) for m in mismatches if m.shippable]
        if local_wheel is not None:
            wheels.append(local_wheel)
        if wheels:
            session.push_sync({"__burstlab_hashes": [w.sha256 for w in wheels]})
            need = set(_remote(session, "from burstlab.remote_kernel.envsync import missing as __m\n"
                                        "__burstlab_need = __m(__burstlab_hashes)\ndel __m, __burstlab_hashes",
                               ["__burstlab_need"])["__burstlab_need"])
            send = {w.sha256: w.data for w in wheels if w.sha256 in need}
            session.push_sync({"__burstlab_wheels": send, "__burstlab_order": [w.sha256 for w in wheels],
                               "__burstlab_envhash": envsync.environment_hash(here, wheels)})
            overlay = _remote(session, (
                "import sys as __s, importlib as __i\n"
                "from burstlab.remote_kernel.envsync import install as __inst\n"
                "__burstlab_overlay = __inst(__burstlab_wheels, __burstlab_order, __burstlab_envhash)\n"
                "__s.path.insert(0, __burstlab_overlay); __i.invalidate_caches()\n"
                "del __s, __i, __inst, __burstlab_wheels, __burstlab_order, __burstlab_envhash"),
                ["__burstlab_overlay"])["__burstlab_overlay"]
            result = Prepared(report=text, shipped_bytes=sum(len(d) for d in send.values()),
                              shipped=tuple(w.filename for w in wheels if w.sha256 in need), overlay=overlay)
    with _checked_lock:
        _checked[(session.host, env_hash)] = Prepared(report=result.report)
    return result


__all__ = ["Prepared", "prepare"]
